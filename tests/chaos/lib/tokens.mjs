// HS256 tokens for the chaos suite (node:crypto), signed with the secret every server here runs with.
import { createHmac } from 'node:crypto';

export const SECRET = 'herald-chaos-suite-secret-0123456789-abcdefghij';

const b64url = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A token for `role`, valid for `ttl` seconds (long enough for the one-hour soak by default). */
export function token(role = 'anon', ttl = 6 * 3600) {
  const body = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ role, exp: Math.floor(Date.now() / 1000) + ttl })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

export const anonToken = () => token('anon');
export const serviceToken = () => token('service_role');
