// HS256 JWTs for the tests, minted with node:crypto: valid, expired, forged and malformed tokens.
import { createHmac } from 'node:crypto';

export const SECRET = 'herald-compat-suite-secret-0123456789-abcdefghij';

const b64url = (value) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** Signs `claims` as an HS256 JWT with `secret`. */
export function signJwt(claims, secret = SECRET, header = { alg: 'HS256', typ: 'JWT' }) {
  const body = `${b64url(header)}.${b64url(claims)}`;
  const sig = createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

export const nowSecs = () => Math.floor(Date.now() / 1000);

/** A token for `role` that expires `ttl` seconds from now (negative: already expired). */
export function token({ role = 'anon', ttl = 3600, sub, secret = SECRET, extra = {} } = {}) {
  const claims = { role, exp: nowSecs() + ttl, ...extra };
  if (sub !== undefined) claims.sub = sub;
  return signJwt(claims, secret);
}

export const anonToken = (opts = {}) => token({ role: 'anon', ...opts });
export const authToken = (opts = {}) => token({ role: 'authenticated', sub: 'user-1', ...opts });
export const serviceToken = (opts = {}) => token({ role: 'service_role', ...opts });

/** Signed with a different secret: the signature cannot verify. */
export const forgedToken = () => token({ role: 'service_role', secret: `${SECRET}-not-the-real-one` });

/** Expired `secondsAgo` seconds ago. */
export const expiredToken = (secondsAgo = 120) => token({ role: 'anon', ttl: -secondsAgo });

/** Correctly signed, but without a `role` claim. */
export const tokenWithoutRole = () => signJwt({ exp: nowSecs() + 3600, sub: 'user-1' });

/** Correctly signed, but without an `exp` claim. */
export const tokenWithoutExp = () => signJwt({ role: 'anon' });
