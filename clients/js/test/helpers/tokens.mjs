// HS256 JWTs for the tests, minted with node:crypto (the secret the test servers run with).
import { createHmac } from 'node:crypto';

export const SECRET = 'herald-js-client-test-secret-0123456789-abcdefghij';

const b64url = (value) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** Signs `claims` as an HS256 JWT. */
export function signJwt(claims, secret = SECRET) {
  const body = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  const sig = createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

export const nowSecs = () => Math.floor(Date.now() / 1000);

/** A token for `role` expiring `ttl` seconds after `now` (seconds; default the real time). */
export function token({ role = 'anon', ttl = 3600, now = nowSecs(), secret = SECRET, sub } = {}) {
  const claims = { role, exp: now + ttl };
  if (sub !== undefined) claims.sub = sub;
  return signJwt(claims, secret);
}

export const anonToken = (opts = {}) => token({ role: 'anon', ...opts });
export const serviceToken = (opts = {}) => token({ role: 'service_role', ...opts });
export const expiredToken = () => token({ role: 'anon', ttl: -120 });
