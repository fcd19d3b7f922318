// Token tampering, on every transport at once: the WebSocket handshake (401 and its `error`), a
// join's access_token (the error reason), the HTTP API (401) and /sse (401).
import { createHmac } from 'node:crypto';
import { anon, clip, must, reasonOf, service, uniq, withSocket } from '../lib/check.mjs';
import { brief, http, sse } from '../lib/net.mjs';
import { Phx } from '../lib/phoenix.mjs';
import { algNone, hs256WithPublicKey, nowSecs, rs256, signJwt, signRsa, tampered, token } from '../lib/tokens.mjs';
import { PROD_ORIGIN } from '../lib/servers.mjs';
import { generateKeyPairSync } from 'node:crypto';

/**
 * `make(srv)` builds a token every transport must refuse: handshake 401 with `wsError`, join reason
 * `joinReason`, HTTP 401, SSE 401.
 */
function refusedEverywhere(make, wsError, joinReason) {
  return async ({ srv }) => {
    const t = make(srv);
    const ws = await Phx.refusal(srv, t);
    const error = ws.body && JSON.parse(ws.body).error;
    must(ws.status === 401 && (wsError instanceof RegExp ? wsError.test(error) : error === wsError), `handshake: ${JSON.stringify(ws)}`);
    const join = await withSocket(srv, async (phx) => {
      const r = reasonOf(await phx.join(`realtime:${uniq('tok')}`, {}, { accessToken: t }));
      must(phx.open && (await phx.heartbeat()), 'socket unusable after the refused join');
      return r;
    });
    must(joinReason instanceof RegExp ? joinReason.test(join) : join.startsWith(joinReason), `join reason: ${join}`);
    const h = await http(srv, '/api/broadcast', {
      method: 'POST',
      headers: { authorization: `Bearer ${t}` },
      json: { messages: [{ topic: uniq('tok'), event: 'e', payload: {} }] },
    });
    must(h.status === 401, `HTTP: ${brief(h)}`);
    const s = await sse(srv, `topic=${uniq('tok')}&apikey=${encodeURIComponent(t)}`);
    s.close();
    must(s.status === 401, `SSE: ${s.status} ${s.text()}`);
    return `WS 401 "${error}", join "${clip(join, 60)}", HTTP 401, SSE 401`;
  };
}

/** `make(srv)` builds a token every transport must accept; a publish with it is delivered. */
function acceptedEverywhere(make) {
  return async ({ srv }) => {
    const t = make(srv);
    const topic = uniq('tok-ok');
    const phx = await Phx.open(srv, t);
    try {
      const r = await phx.join(`realtime:${topic}`, { broadcast: { self: true, ack: true } });
      must(r.status === 'ok', `join ${JSON.stringify(r)}`);
      const ack = await phx.reply(phx.broadcast(`realtime:${topic}`, 'e', { n: 1 }));
      must(ack.status === 'ok', `push ${JSON.stringify(ack)}`);
      await phx.expect((f) => f.payload?.event === 'e', 5000, 'own broadcast');
      const h = await http(srv, '/api/broadcast', { method: 'POST', headers: { authorization: `Bearer ${t}` }, json: { messages: [{ topic, event: 'h', payload: {} }] } });
      must(h.status === 202, `HTTP ${brief(h)}`);
      await phx.expect((f) => f.payload?.event === 'h', 5000, 'HTTP broadcast');
      const s = await sse(srv, `topic=${topic}&apikey=${encodeURIComponent(t)}`);
      s.close();
      must(s.status === 200, `SSE ${s.status} ${s.text()}`);
      must(await phx.heartbeat(), 'heartbeat');
      return 'accepted on WS, HTTP and SSE; delivered';
    } finally {
      phx.close();
    }
  };
}

const SIG = 'Failed to validate JWT signature';

export default [
  {
    name: 'token-tampered-claims',
    server: 'dev',
    short: true,
    expect: 'an anon token whose claims were rewritten to service_role is refused: 401 Failed to validate JWT signature; join JwtSignatureError',
    run: refusedEverywhere((srv) => tampered(srv.secret), SIG, 'JwtSignatureError: Failed to validate JWT signature'),
  },
  {
    name: 'token-alg-none',
    server: 'dev',
    short: true,
    expect: 'an unsigned token with alg "none" is refused on every transport (401; join MalformedJWT or JwtSignatureError)',
    run: async (ctx) => {
      const t = algNone();
      const ws = await Phx.refusal(ctx.srv, t);
      const text = ws.body && JSON.parse(ws.body).error;
      must(ws.status === 401 && [SIG, 'The token provided is not a valid JWT'].includes(text), `handshake ${JSON.stringify(ws)}`);
      return refusedEverywhere(() => t, text, text === SIG ? 'JwtSignatureError' : 'MalformedJWT')(ctx);
    },
  },
  {
    name: 'token-rs256',
    server: 'dev',
    expect: 'an RS256 token on a node without public keys is refused: 401 (no key to verify it, or a signature failure); join JwtSignatureError',
    run: refusedEverywhere(() => rs256(), /^(Failed to validate JWT signature|No key to verify the token signed with RS256 \(kid: none\))$/, 'JwtSignatureError'),
  },
  {
    name: 'token-alg-confusion-hs256-public-key',
    server: 'dev',
    short: true,
    expect: 'an HS256 token keyed with an RSA public key (alg confusion) is refused: 401 Failed to validate JWT signature',
    run: refusedEverywhere(() => hs256WithPublicKey(), SIG, 'JwtSignatureError'),
  },
  {
    name: 'token-wrong-secret',
    server: 'prod',
    short: true,
    expect: 'a service_role token signed with another secret is refused on the production server: 401 Failed to validate JWT signature',
    run: refusedEverywhere((srv) => token(`${srv.secret}-other`, { role: 'service_role' }), SIG, 'JwtSignatureError'),
  },
  {
    name: 'token-hs512-wrong-secret',
    server: 'dev',
    expect: 'an HS512 token with the wrong secret is refused: 401 Failed to validate JWT signature',
    run: refusedEverywhere(() => signJwt({ role: 'service_role', exp: nowSecs() + 3600 }, 'x'.repeat(64), { alg: 'HS512', typ: 'JWT' }), SIG, 'JwtSignatureError'),
  },
  {
    name: 'token-expired',
    server: 'dev',
    short: true,
    expect: 'a token expired 120 s ago: 401 Token has expired; join "InvalidJWTToken: Token has expired <n> seconds ago"',
    run: refusedEverywhere((srv) => token(srv.secret, { ttl: -120 }), 'Token has expired', 'InvalidJWTToken: Token has expired 12'),
  },
  {
    name: 'token-nbf-in-the-future',
    server: 'dev',
    short: true,
    expect: 'nbf one hour ahead: 401 Token is not valid yet; join "InvalidJWTToken: Token is not valid yet: nbf is <n> seconds from now"',
    run: refusedEverywhere(
      (srv) => token(srv.secret, { extra: { nbf: nowSecs() + 3600 } }),
      /^Token is not valid yet: nbf is 3[56]\d\d seconds from now$/,
      'InvalidJWTToken: Token is not valid yet: nbf is 3',
    ),
  },
  {
    name: 'token-exp-huge',
    server: 'dev',
    short: true,
    expect: 'exp = 9.3e18 (far beyond any clock) does not panic: the token works on WS, HTTP and SSE',
    run: acceptedEverywhere((srv) => signJwt({ role: 'service_role', exp: 9.3e18 }, srv.secret)),
  },
  {
    name: 'token-exp-extreme-values',
    server: 'dev',
    expect: 'exp = 1e300, exp = 2^64 as a float and exp = u64::MAX are held (accepted, no panic); exp = -1 and exp = "soon" are refused with 401',
    run: async (ctx) => {
      const { srv } = ctx;
      for (const exp of [1e300, 18446744073709551616, '18446744073709551615']) {
        const raw = typeof exp === 'string' ? null : exp;
        const t = raw === null
          ? signRawClaims(`{"role":"anon","exp":${exp}}`, srv.secret)
          : signJwt({ role: 'anon', exp: raw }, srv.secret);
        await acceptedEverywhere(() => t)(ctx).catch((e) => {
          throw new Error(`exp ${exp}: ${e.message}`);
        });
      }
      const neg = await Phx.refusal(srv, signJwt({ role: 'anon', exp: -1 }, srv.secret));
      must(neg.status === 401 && neg.body.includes('Token has expired'), `exp -1: ${JSON.stringify(neg)}`);
      const str = await Phx.refusal(srv, signJwt({ role: 'anon', exp: 'soon' }, srv.secret));
      must(str.status === 401, `exp "soon": ${JSON.stringify(str)}`);
      return '3 extreme exp accepted, -1 and "soon" refused 401';
    },
  },
  {
    name: 'token-missing-role',
    server: 'dev',
    short: true,
    expect: 'a signed token without role (or with an empty role): 401 Fields `role` and `exp` are required in JWT',
    run: async (ctx) => {
      const a = await refusedEverywhere((srv) => signJwt({ exp: nowSecs() + 3600, sub: 'u' }, srv.secret), 'Fields `role` and `exp` are required in JWT', 'InvalidJWTToken: Fields')(ctx);
      const empty = await Phx.refusal(ctx.srv, signJwt({ role: '', exp: nowSecs() + 3600 }, ctx.srv.secret));
      must(empty.status === 401 && empty.body.includes('are required'), `empty role: ${JSON.stringify(empty)}`);
      const noExp = await Phx.refusal(ctx.srv, signJwt({ role: 'service_role' }, ctx.srv.secret));
      must(noExp.status === 401 && noExp.body.includes('are required'), `no exp: ${JSON.stringify(noExp)}`);
      return `${a}; empty role and missing exp 401`;
    },
  },
  {
    name: 'token-malformed',
    server: 'dev',
    expect: 'not-a-JWT apikeys ("abc", "a.b.c", 64 KB of dots, a non-numeric iat) → 401 The token provided is not a valid JWT',
    run: async ({ srv }) => {
      for (const t of ['abc', 'a.b.c', '.'.repeat(65_536).slice(0, 7000), signJwt({ role: 'anon', exp: nowSecs() + 3600, iat: 'yesterday' }, srv.secret)]) {
        const r = await Phx.refusal(srv, t);
        must(r.status === 401 && r.body.includes('not a valid JWT'), `${clip(t, 20)}: ${JSON.stringify(r).slice(0, 200)}`);
      }
      return '401 not a valid JWT ×4';
    },
  },
  {
    name: 'token-refresh-forged',
    server: 'dev',
    short: true,
    expect: 'an access_token refresh with a forged token: system error then phx_close for the channel; the socket stays open',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('refresh')}`;
        await phx.join(topic);
        phx.send(topic, 'access_token', { access_token: tampered(srv.secret) }, { joinRef: phx.joinRefs[topic] });
        const sys = await phx.expect((f) => f.topic === topic && f.event === 'system', 5000, 'system error');
        must(sys.payload?.status === 'error' && /signature/i.test(sys.payload?.message), `system ${JSON.stringify(sys.payload)}`);
        await phx.expect((f) => f.topic === topic && f.event === 'phx_close', 5000, 'phx_close');
        must(await phx.heartbeat(), 'socket unusable');
        return `system "${sys.payload.message}", phx_close, socket open`;
      }),
  },
  {
    name: 'anon-on-private-channel',
    server: 'dev',
    short: true,
    expect: 'anon joining a private channel gets Unauthorized: You do not have permissions to read...; anon publishing private over HTTP → 403',
    run: async ({ srv }) => {
      const name = uniq('priv');
      const reason = await withSocket(srv, async (phx) => reasonOf(await phx.join(`realtime:${name}`, { private: true })));
      must(reason === `Unauthorized: You do not have permissions to read from this Channel topic: ${name}`, `join reason ${reason}`);
      const h = await http(srv, '/api/broadcast', { method: 'POST', headers: { authorization: `Bearer ${anon(srv)}` }, json: { messages: [{ topic: name, event: 'e', payload: {}, private: true }] } });
      must(h.status === 403, `HTTP ${brief(h)}`);
      const s = await sse(srv, `topic=${name}&private=true&apikey=${anon(srv)}`);
      s.close();
      must(s.status === 403, `SSE ${s.status}`);
      const svc = await http(srv, '/api/broadcast', { method: 'POST', headers: { authorization: `Bearer ${service(srv)}` }, json: { messages: [{ topic: name, event: 'e', payload: {}, private: true }] } });
      must(svc.status === 202, `service_role private publish ${brief(svc)}`);
      return 'join Unauthorized, HTTP 403, SSE 403 (service_role 202)';
    },
  },
  {
    name: 'keys-rs256-with-the-configured-key',
    server: 'keys',
    short: true,
    expect: 'on a node with an RSA public key (jwt_keys_file), issuer and audience, an RS256 token signed with the matching private key and the right iss/aud works on WS, HTTP and SSE',
    run: acceptedEverywhere((srv) => signRsa({ role: 'service_role', exp: nowSecs() + 3600, ...srv.claims }, srv.privateKey)),
  },
  {
    name: 'keys-alg-confusion-hs256-with-the-node-public-key',
    server: 'keys',
    short: true,
    expect: 'an HS256 token keyed with the node\'s own RSA public key (the PEM of jwt_keys_file) is refused everywhere: 401 Failed to validate JWT signature',
    run: refusedEverywhere((srv) => signJwt({ role: 'service_role', exp: nowSecs() + 3600, ...srv.claims }, srv.publicKeyPem), SIG, 'JwtSignatureError'),
  },
  {
    name: 'keys-rs256-another-private-key',
    server: 'keys',
    short: true,
    expect: 'an RS256 token signed with another RSA key (right iss/aud) is refused everywhere: 401 Failed to validate JWT signature',
    run: refusedEverywhere(
      (srv) => signRsa({ role: 'service_role', exp: nowSecs() + 3600, ...srv.claims }, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey),
      SIG,
      'JwtSignatureError',
    ),
  },
  {
    name: 'keys-unknown-kid',
    server: 'keys',
    expect: 'an RS256 token naming an unknown kid is refused at once: 401 No key to verify the token signed with RS256 (kid: attacker-1)',
    run: refusedEverywhere(
      (srv) => signRsa({ role: 'service_role', exp: nowSecs() + 3600, ...srv.claims }, srv.privateKey, { kid: 'attacker-1' }),
      'No key to verify the token signed with RS256 (kid: attacker-1)',
      'JwtSignatureError: No key to verify',
    ),
  },
  {
    name: 'keys-issuer-mismatch',
    server: 'keys',
    short: true,
    expect: 'a correctly signed token from another issuer (or without iss) is refused: 401 The token\'s issuer (iss) is not accepted here',
    run: async (ctx) => {
      const a = await refusedEverywhere(
        (srv) => token(srv.secret, { role: 'service_role', extra: { ...srv.claims, iss: 'https://evil.example' } }),
        "The token's issuer (iss) is not accepted here",
        "InvalidJWTToken: The token's issuer (iss) is not accepted here",
      )(ctx);
      const none = await Phx.refusal(ctx.srv, token(ctx.srv.secret, { role: 'anon', extra: { aud: 'realtime' } }));
      must(none.status === 401 && none.body.includes('issuer'), `without iss: ${JSON.stringify(none)}`);
      return `${a}; without iss 401`;
    },
  },
  {
    name: 'keys-audience-mismatch',
    server: 'keys',
    expect: 'a correctly signed token for another audience (a string, a list without it, or none) is refused: 401 The token\'s audience (aud) is not accepted here',
    run: async (ctx) => {
      const a = await refusedEverywhere(
        (srv) => token(srv.secret, { role: 'service_role', extra: { ...srv.claims, aud: ['billing', 'admin'] } }),
        "The token's audience (aud) is not accepted here",
        "InvalidJWTToken: The token's audience (aud) is not accepted here",
      )(ctx);
      for (const aud of ['other', undefined]) {
        const extra = { iss: ctx.srv.claims.iss };
        if (aud) extra.aud = aud;
        const r = await Phx.refusal(ctx.srv, token(ctx.srv.secret, { role: 'anon', extra }));
        must(r.status === 401 && r.body.includes('audience'), `aud ${aud}: ${JSON.stringify(r)}`);
      }
      const list = await Phx.refusal(ctx.srv, token(ctx.srv.secret, { role: 'anon', extra: { iss: ctx.srv.claims.iss, aud: ['x', 'realtime'] } }));
      must(list.opened, `a list naming the audience was refused: ${JSON.stringify(list)}`);
      return `${a.slice(0, 60)}…; "other" and none 401; a list naming it accepted`;
    },
  },
  {
    name: 'allowed-origins',
    server: 'keys',
    short: true,
    expect: 'with allowed_origins set, a WebSocket upgrade and an /sse request from https://evil.example get 403 Origin not allowed: https://evil.example; the listed origin and requests without Origin connect',
    run: async ({ srv }) => {
      const evil = 'https://evil.example';
      const ws = await Phx.refusal(srv, anon(srv), { headers: { origin: evil } });
      must(ws.status === 403 && ws.body.includes(`Origin not allowed: ${evil}`), `WS from evil: ${JSON.stringify(ws)}`);
      const s = await sse(srv, `topic=${uniq('orig')}&apikey=${anon(srv)}`, { headers: { origin: evil } });
      s.close();
      must(s.status === 403 && s.text().includes(`Origin not allowed: ${evil}`), `SSE from evil: ${s.status} ${s.text()}`);
      const good = await Phx.refusal(srv, anon(srv), { headers: { origin: PROD_ORIGIN } });
      const bare = await Phx.refusal(srv, anon(srv));
      must(good.opened && bare.opened, `listed ${JSON.stringify(good)}, no Origin ${JSON.stringify(bare)}`);
      return 'WS 403, SSE 403 for evil; listed and no-Origin open';
    },
  },
  {
    name: 'sse-cookie-from-another-site',
    server: 'dev',
    short: true,
    expect: 'an /sse request carrying a valid herald_token cookie from a page of https://evil.example is not authenticated by the cookie (401); without Origin, or from the node\'s own origin, the cookie works',
    run: async ({ srv }) => {
      const cookie = `herald_token=${anon(srv)}`;
      const q = `topic=${uniq('cookie')}`;
      const evil = await sse(srv, q, { headers: { cookie, origin: 'https://evil.example' } });
      evil.close();
      must(evil.status === 401, `from evil: ${evil.status} ${evil.text()}`);
      const bare = await sse(srv, q, { headers: { cookie } });
      bare.close();
      const own = await sse(srv, q, { headers: { cookie, origin: `http://127.0.0.1:${srv.port}` } });
      own.close();
      must(bare.status === 200 && own.status === 200, `no Origin ${bare.status}, own origin ${own.status}`);
      return 'evil 401; no Origin 200, own origin 200';
    },
  },
];

/** Signs a claims text as is (for numbers JSON.stringify cannot write). */
function signRawClaims(claimsText, secret) {
  const h = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
  const c = Buffer.from(claimsText).toString('base64url');
  return `${h}.${c}.${createHmac('sha256', secret).update(`${h}.${c}`).digest('base64url')}`;
}
