// JWTs for hostile cases, minted with node:crypto: valid ones, and every kind of forgery a client
// could try (tampered claims, `alg: none`, RS256 with a real key, HS256 keyed with a public key,
// expired, not yet valid, absurd `exp`, missing claims, the wrong secret).
import { createHmac, createSign, generateKeyPairSync } from 'node:crypto';

const b64url = (value) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

const HASH = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' };

/** Signs `claims` with HMAC (`header.alg` HS256/384/512) and `secret`. */
export function signJwt(claims, secret, header = { alg: 'HS256', typ: 'JWT' }) {
  const body = `${b64url(header)}.${b64url(claims)}`;
  const sig = createHmac(HASH[header.alg] ?? 'sha256', secret).update(body).digest('base64url');
  return `${body}.${sig}`;
}

export const nowSecs = () => Math.floor(Date.now() / 1000);

/** A valid token of `role` for `secret`, expiring in `ttl` seconds. */
export function token(secret, { role = 'anon', ttl = 3 * 3600, extra = {} } = {}) {
  return signJwt({ role, exp: nowSecs() + ttl, ...extra }, secret);
}

/** A valid token's claims changed after signing (the signature no longer covers them). */
export function tampered(secret) {
  const [h, , s] = token(secret, { role: 'anon' }).split('.');
  return `${h}.${b64url({ role: 'service_role', exp: nowSecs() + 3600 })}.${s}`;
}

/** `alg: none` with an empty signature, claiming the service role. */
export function algNone() {
  return `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ role: 'service_role', exp: nowSecs() + 3600 })}.`;
}

let keys;
function rsaKeys() {
  keys ??= generateKeyPairSync('rsa', { modulusLength: 2048 });
  return keys;
}

/** RS256, signed with an RSA key the server has never seen. */
export function rs256() {
  const body = `${b64url({ alg: 'RS256', typ: 'JWT' })}.${b64url({ role: 'service_role', exp: nowSecs() + 3600 })}`;
  const sig = createSign('RSA-SHA256').update(body).sign(rsaKeys().privateKey).toString('base64url');
  return `${body}.${sig}`;
}

/** Algorithm confusion: HS256 keyed with an RSA public key (PEM), as against a server that verifies RS256. */
export function hs256WithPublicKey() {
  const pem = rsaKeys().publicKey.export({ type: 'spki', format: 'pem' });
  return signJwt({ role: 'service_role', exp: nowSecs() + 3600 }, pem);
}

/** RS256 (or another RSA PKCS#1 v1.5 alg of `hash`) over `claims` with `privateKey`; `kid` in the header when given. */
export function signRsa(claims, privateKey, { kid, alg = 'RS256' } = {}) {
  const header = { alg, typ: 'JWT' };
  if (kid) header.kid = kid;
  const body = `${b64url(header)}.${b64url(claims)}`;
  const hash = { RS256: 'RSA-SHA256', RS384: 'RSA-SHA384', RS512: 'RSA-SHA512' }[alg] ?? 'RSA-SHA256';
  return `${body}.${createSign(hash).update(body).sign(privateKey).toString('base64url')}`;
}
