// The HTTP API and /sse: name and key lengths, content types, bad and oversized bodies, the body
// read only after the token, pipelining, malformed and oversized request heads, CORS, /dev/token and
// /metrics.
import { anon, arrayDepth, clip, must, service, uniq, withSocket } from '../lib/check.mjs';
import { brief, head, http, parseResponses, rawConnect, sse } from '../lib/net.mjs';
import { broadcastsOn } from '../lib/phoenix.mjs';
import { METRICS_TOKEN, PROD_ORIGIN } from '../lib/servers.mjs';

const post = (srv, path, opts) => http(srv, path, { method: 'POST', ...opts });
const batch = (srv, messages, tok = service(srv), headers = {}) =>
  post(srv, '/api/broadcast', { headers: { authorization: `Bearer ${tok}`, ...headers }, json: { messages } });
const single = (srv, topic, event, body, headers = {}) =>
  post(srv, `/api/broadcast/${encodeURIComponent(topic)}/events/${encodeURIComponent(event)}`, {
    headers: { authorization: `Bearer ${service(srv)}`, 'content-type': 'application/json', ...headers },
    body,
  });

/** Status 422 whose body names `field` (and `index`, for a batch). */
function names422(res, field, index) {
  must(res.status === 422, `status ${brief(res)}`);
  const errs = res.json?.errors;
  if (index === undefined) {
    must(errs && errs[field] !== undefined, `422 without ${field}: ${res.text}`);
    return `422 ${clip(JSON.stringify(errs), 110)}`;
  }
  const list = errs?.messages;
  must(Array.isArray(list) && list.length === 1 && list[0].index === index && list[0][field] !== undefined, `422 body ${clip(res.text, 200)}`);
  return `422 ${clip(JSON.stringify(list[0]), 110)}`;
}

/**
 * Publishes `bad` (expected refused), then a marker to the same subscriber's topic: the marker
 * must be the only thing that arrives.
 */
async function nothingDelivered(srv, topic, bad) {
  return withSocket(srv, async (phx) => {
    await phx.join(`realtime:${topic}`);
    const seen = await bad();
    const m = await batch(srv, [{ topic, event: 'marker', payload: {} }]);
    must(m.status === 202, `marker publish ${brief(m)}`);
    await phx.expect((f) => f.payload?.event === 'marker', 5000, 'the marker');
    const got = broadcastsOn(phx, `realtime:${topic}`).map((b) => b.event);
    must(got.length === 1, `delivered before the marker: ${JSON.stringify(got)}`);
    return `${seen}; nothing delivered`;
  });
}

/** Sends a request head announcing `length` body bytes and none of them; resolves the response. */
async function headOnly(srv, path, headers, { waitMs = 3000 } = {}) {
  const conn = await rawConnect(srv);
  try {
    const t0 = Date.now();
    await conn.write(head('POST', path, headers));
    await conn.until((c) => parseResponses(c.data).length > 0 || c.closed, waitMs);
    const [res] = parseResponses(conn.data);
    return { res, ms: Date.now() - t0, closed: conn.closed };
  } finally {
    conn.destroy();
  }
}

const headers = (n, size = 10) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-h${i}`, 'v'.repeat(size)]));

export default [
  {
    name: 'http-batch-topic-too-long',
    server: 'dev',
    short: true,
    expect: 'a batch whose third message has a 247-byte topic is refused whole: 422 naming index 2 and topic; nothing delivered',
    run: async ({ srv }) => {
      const topic = uniq('batch-topic');
      return nothingDelivered(srv, topic, async () => {
        const res = await batch(srv, [
          { topic, event: 'a', payload: {} },
          { topic, event: 'b', payload: {} },
          { topic: 't'.repeat(247), event: 'c', payload: {} },
        ]);
        return names422(res, 'topic', 2);
      });
    },
  },
  {
    name: 'http-batch-event-too-long',
    server: 'dev',
    expect: 'a batch with a 256-byte event at index 1 is refused whole: 422 naming index 1 and event; nothing delivered',
    run: async ({ srv }) => {
      const topic = uniq('batch-event');
      return nothingDelivered(srv, topic, async () =>
        names422(await batch(srv, [{ topic, event: 'a', payload: {} }, { topic, event: 'e'.repeat(256), payload: {} }]), 'event', 1),
      );
    },
  },
  {
    name: 'http-batch-id-too-long',
    server: 'dev',
    expect: 'a batch message with a 256-byte id is refused: 422 naming index 0 and id',
    run: async ({ srv }) => names422(await batch(srv, [{ topic: uniq('id'), event: 'a', payload: {}, id: 'i'.repeat(256) }]), 'id', 0),
  },
  {
    name: 'http-batch-idempotency-key-too-long',
    server: 'dev',
    short: true,
    expect: 'a batch message with a 256-byte idempotency_key is refused: 422 naming index 0 and idempotency_key',
    run: async ({ srv }) =>
      names422(await batch(srv, [{ topic: uniq('ik'), event: 'a', payload: {}, idempotency_key: 'k'.repeat(256) }]), 'idempotency_key', 0),
  },
  {
    name: 'http-single-name-lengths',
    server: 'dev',
    short: true,
    expect: 'the single-message route answers 422 naming topic (247 bytes), event (256 bytes) and idempotency_key (256-byte Idempotency-Key header)',
    run: async ({ srv }) => {
      const a = names422(await single(srv, 't'.repeat(247), 'e', '{}'), 'topic');
      const b = names422(await single(srv, uniq('s'), 'e'.repeat(256), '{}'), 'event');
      const c = names422(await single(srv, uniq('s'), 'e', '{}', { 'idempotency-key': 'k'.repeat(256) }), 'idempotency_key');
      return [a, b, c].map((s) => s.slice(0, 60)).join(' / ');
    },
  },
  {
    name: 'sse-topic-limits',
    server: 'dev',
    short: true,
    expect: '/sse with a 247-byte topic → 400 naming topic; 33 topics → 400; an empty topic → 400; no topic → 400',
    run: async ({ srv }) => {
      const tok = `apikey=${anon(srv)}`;
      const cases = [
        [`topic=${'t'.repeat(247)}&${tok}`, 'topic is 247 bytes long'],
        [`${Array.from({ length: 33 }, (_, i) => `topic=t${i}`).join('&')}&${tok}`, 'at most 32 topics'],
        [`topic=&${tok}`, 'blank'],
        [tok, 'topic'],
      ];
      for (const [q, text] of cases) {
        const r = await sse(srv, q);
        r.close();
        must(r.status === 400 && r.text().includes(text), `?${clip(q, 40)} → ${r.status} ${r.text()}`);
      }
      return '400 ×4, each naming the problem';
    },
  },
  {
    name: 'http-batch-unsupported-media-type',
    server: 'dev',
    short: true,
    expect: 'a batch without Content-Type, as text/plain, or as application/jsonx → 415 Unsupported Media Type',
    run: async ({ srv }) => {
      const body = JSON.stringify({ messages: [{ topic: uniq('ct'), event: 'e', payload: {} }] });
      const seen = [];
      for (const ct of [undefined, 'text/plain', 'application/jsonx', 'multipart/form-data; boundary=x']) {
        const h = { authorization: `Bearer ${service(srv)}` };
        if (ct) h['content-type'] = ct;
        const res = await post(srv, '/api/broadcast', { headers: h, body });
        must(res.status === 415 && res.text.includes('Unsupported Media Type'), `${ct ?? 'no content-type'}: ${brief(res)}`);
        seen.push(res.status);
      }
      return `415 ×${seen.length}`;
    },
  },
  {
    name: 'http-batch-not-json',
    server: 'dev',
    expect: 'batch bodies that are not a valid batch (garbage, messages not an array, a message without event) → 422',
    run: async ({ srv }) => {
      const h = { authorization: `Bearer ${service(srv)}`, 'content-type': 'application/json' };
      for (const body of ['{{{', '{"messages": 5}', '{"messages":[{"topic":"x","payload":{}}]}', '[]', '\u0000']) {
        const res = await post(srv, '/api/broadcast', { headers: h, body });
        must(res.status === 422, `${clip(body, 30)} → ${brief(res)}`);
      }
      return '422 ×5';
    },
  },
  {
    name: 'http-batch-deep-nesting',
    server: 'dev',
    short: true,
    expect: 'a batch whose payload nests 100000 arrays is refused (422, nothing delivered) or accepted (202) and delivered byte-identical; no crash',
    run: async ({ srv }) => {
      const topic = uniq('deep');
      const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
      return withSocket(srv, async (phx) => {
        await phx.join(`realtime:${topic}`);
        const body = `{"messages":[{"topic":"${topic}","event":"deep","payload":${deep}}]}`;
        const res = await post(srv, '/api/broadcast', { headers: { authorization: `Bearer ${service(srv)}`, 'content-type': 'application/json' }, body });
        must(res.status === 202 || res.status === 422, `status ${brief(res)}`);
        must((await batch(srv, [{ topic, event: 'marker', payload: {} }])).status === 202, 'marker');
        await phx.expect((f) => f.payload?.event === 'marker', 5000, 'the marker');
        const got = broadcastsOn(phx, `realtime:${topic}`).filter((b) => b.event === 'deep');
        if (res.status === 202) must(got.length === 1 && arrayDepth(got[0].payload) === 100_000, `202 but delivered ${got.length}, intact ${got[0] && arrayDepth(got[0].payload) === 100_000}`);
        else must(got.length === 0, '422 but delivered');
        return res.status === 202 ? '202, delivered intact' : `422 ${clip(res.text, 80)}, nothing delivered`;
      });
    },
  },
  {
    name: 'history-deep-payload',
    server: 'dev',
    expect: 'a deeply nested payload that was accepted reads back from GET /api/channels/<name>/history as stored (not replaced by null)',
    run: async ({ srv }) => {
      const topic = uniq('deephist');
      const depth = 200;
      const deep = `${'['.repeat(depth)}${']'.repeat(depth)}`;
      const res = await post(srv, '/api/broadcast', {
        headers: { authorization: `Bearer ${service(srv)}`, 'content-type': 'application/json' },
        body: `{"messages":[{"topic":"${topic}","event":"deep","payload":${deep}}]}`,
      });
      must(res.status === 202, `publish ${brief(res)}`);
      const h = await http(srv, `/api/channels/${topic}/history`, { headers: { authorization: `Bearer ${service(srv)}` } });
      must(h.status === 200, `history ${brief(h)}`);
      const stored = h.json.messages?.[0]?.payload;
      must(JSON.stringify(stored) === deep, `history payload of a ${depth}-deep array: ${clip(JSON.stringify(stored), 60)}`);
      return 'read back intact';
    },
  },
  {
    name: 'http-batch-huge-array',
    server: 'dev',
    short: true,
    expect: 'a batch of 100000 messages (6 MB, over max_http_batch 1000) → 429 "Too many messages to broadcast, please reduce the batch size"; nothing delivered',
    run: async ({ srv }) => {
      const topic = uniq('huge');
      return nothingDelivered(srv, topic, async () => {
        const messages = Array.from({ length: 100_000 }, () => ({ topic, event: 'e', payload: {} }));
        const res = await batch(srv, messages);
        must(res.status === 429 && res.json?.message === 'Too many messages to broadcast, please reduce the batch size', `status ${brief(res)}`);
        return '429 reduce the batch size';
      });
    },
  },
  {
    name: 'http-payload-over-max-payload-bytes',
    server: 'dev',
    short: true,
    expect: 'a 300 KB payload (over max_payload_bytes 256 KiB) → 422 naming payload on the batch (with its index); 413 naming payload on the single route, whose declared length is over the limit',
    run: async ({ srv }) => {
      const topic = uniq('bigpay');
      const a = names422(await batch(srv, [{ topic, event: 'e', payload: { b: 'x'.repeat(300_000) } }]), 'payload', 0);
      const res = await single(srv, topic, 'e', JSON.stringify({ b: 'x'.repeat(300_000) }));
      must(res.status === 413 && res.json?.errors?.payload !== undefined, `single route: status ${brief(res)}`);
      const b = `413 ${clip(JSON.stringify(res.json.errors), 110)}`;
      return `${a.slice(0, 60)} / ${b.slice(0, 60)}`;
    },
  },
  {
    name: 'http-batch-content-length-over-limit',
    server: 'small',
    short: true,
    expect: 'an authenticated batch announcing Content-Length 10 MB (over the body limit) → 413 at once, before any body byte is sent',
    run: async ({ srv }) => {
      const { res, ms } = await headOnly(srv, '/api/broadcast', {
        Authorization: `Bearer ${service(srv)}`,
        'Content-Type': 'application/json',
        'Content-Length': String(10 * 1024 * 1024),
      });
      return must(res?.status === 413, `answer ${res ? `${res.status} ${res.text}` : 'none'} after ${ms} ms`) && `413 after ${ms} ms without a body byte`;
    },
  },
  {
    name: 'http-single-content-length-over-limit',
    server: 'small',
    expect: 'the single-message route announcing Content-Length over max_payload_bytes → 413 at once, before any body byte is sent (docs/protocol.md: "a larger declared Content-Length is refused with 413")',
    run: async ({ srv }) => {
      const { res, ms } = await headOnly(srv, `/api/broadcast/${uniq('cl')}/events/e`, {
        Authorization: `Bearer ${service(srv)}`,
        'Content-Type': 'application/json',
        'Content-Length': '1000000',
      });
      return must(res?.status === 413, `answer ${res ? `${res.status} ${res.text}` : 'none'} after ${ms} ms`) && `413 after ${ms} ms`;
    },
  },
  {
    name: 'http-unauthenticated-big-body',
    server: 'dev',
    short: true,
    expect: 'batch and single requests announcing 100 MB without a token, or with a forged one, → 401 at once (the body is never read)',
    run: async ({ srv }) => {
      const seen = [];
      for (const auth of [{}, { Authorization: 'Bearer not.a.token' }, { apikey: `${anon(srv).slice(0, -3)}abc` }]) {
        for (const path of ['/api/broadcast', `/api/broadcast/${uniq('u')}/events/e`]) {
          const { res, ms } = await headOnly(srv, path, { 'Content-Type': 'application/json', 'Content-Length': String(100 * 1024 * 1024), ...auth });
          must(res?.status === 401 && ms < 2000, `${path} ${JSON.stringify(auth).slice(0, 30)}: ${res ? res.status : 'no answer'} after ${ms} ms`);
          seen.push(ms);
        }
      }
      return `401 ×6, slowest after ${Math.max(...seen)} ms`;
    },
  },
  {
    name: 'http-pipelined-requests',
    server: 'dev',
    short: true,
    expect: '30 requests pipelined in one write (healthz, a publish, a 401, a 404) get 30 answers in order; the publish is delivered',
    run: async ({ srv }) => {
      const topic = uniq('pipe');
      return withSocket(srv, async (phx) => {
        await phx.join(`realtime:${topic}`);
        const body = JSON.stringify({ messages: [{ topic, event: 'piped', payload: { n: 1 } }] });
        const reqs = [];
        const want = [];
        for (let i = 0; i < 30; i++) {
          if (i === 10) {
            reqs.push(`POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${service(srv)}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
            want.push(202);
          } else if (i === 20) {
            reqs.push(`POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`);
            want.push(401);
          } else if (i === 25) {
            reqs.push(head('GET', '/no-such-route'));
            want.push(404);
          } else {
            reqs.push(head('GET', '/healthz'));
            want.push(200);
          }
        }
        const conn = await rawConnect(srv);
        try {
          await conn.write(reqs.join(''));
          await conn.until((c) => parseResponses(c.data).length >= 30 || c.closed, 10_000);
          const got = parseResponses(conn.data).map((r) => r.status);
          must(JSON.stringify(got) === JSON.stringify(want), `statuses ${JSON.stringify(got)}`);
        } finally {
          conn.destroy();
        }
        await phx.expect((f) => f.payload?.event === 'piped', 5000, 'the pipelined publish');
        return '30 answers in order, publish delivered';
      });
    },
  },
  {
    name: 'http-pipelined-garbage',
    server: 'dev',
    expect: 'two requests then garbage pipelined: both answered 200, then a 400 (or close) for the garbage, and the connection is closed',
    run: async ({ srv }) => {
      const conn = await rawConnect(srv);
      try {
        await conn.write(`${head('GET', '/healthz')}${head('GET', '/healthz')}\x16\x03\x01GARBAGE \x00\xff\r\n\r\n`);
        const closed = await conn.waitClosed(5000);
        const got = parseResponses(conn.data).map((r) => r.status);
        must(got[0] === 200 && got[1] === 200 && (got.length === 2 || got[2] === 400), `statuses ${JSON.stringify(got)}`);
        return must(closed, `connection still open, statuses ${JSON.stringify(got)}`) && `statuses ${JSON.stringify(got)}, closed`;
      } finally {
        conn.destroy();
      }
    },
  },
  {
    name: 'http-conflicting-content-length',
    server: 'dev',
    expect: 'two different Content-Length headers (request smuggling) → 400 and the connection is closed; nothing published',
    run: async ({ srv }) => {
      const topic = uniq('smuggle');
      return nothingDelivered(srv, topic, async () => {
        const body = JSON.stringify({ messages: [{ topic, event: 'smuggled', payload: {} }] });
        const conn = await rawConnect(srv);
        try {
          await conn.write(
            `POST /api/broadcast HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${service(srv)}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nContent-Length: 5\r\n\r\n${body}`,
          );
          const closed = await conn.waitClosed(5000);
          const got = parseResponses(conn.data).map((r) => r.status);
          must(closed && got.length <= 1 && (got.length === 0 || got[0] === 400), `statuses ${JSON.stringify(got)}, closed ${closed}`);
          return `${got[0] ?? 'no answer'}, closed`;
        } finally {
          conn.destroy();
        }
      });
    },
  },
  {
    name: 'http-garbage-and-tls-on-plain-port',
    server: 'dev',
    short: true,
    expect: '4 KiB of random bytes, and a TLS ClientHello, on the plain port: closed (a 400 at most) within 5 s',
    run: async ({ srv }) => {
      const hello = Buffer.from('16030100a5010000a10303' + '00'.repeat(32) + '000020c02bc02fc02cc030cca9cca8c009c013c00ac014009c009d002f0035c012000a0100005800000014001200000f7777772e6578616d706c652e636f6d', 'hex');
      const seen = [];
      for (const bytes of [Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 256)), hello]) {
        const conn = await rawConnect(srv);
        try {
          await conn.write(bytes);
          const closed = await conn.waitClosed(5000);
          const got = parseResponses(conn.data).map((r) => r.status);
          must(closed && got.every((s) => s === 400), `closed ${closed}, answers ${JSON.stringify(got)} ${clip(conn.text(), 60)}`);
          seen.push(got[0] ?? 'closed');
        } finally {
          conn.destroy();
        }
      }
      return seen.join(', ');
    },
  },
  {
    name: 'header-flood-sse',
    server: 'dev',
    short: true,
    expect: '/sse with 65 request headers → 431; /sse with a 17 KiB request head → 431',
    run: async ({ srv }) => {
      const seen = [];
      for (const [label, h] of [['65 headers', headers(65)], ['17 KiB head', { 'x-big': 'v'.repeat(17 * 1024) }]]) {
        const conn = await rawConnect(srv);
        try {
          await conn.write(head('GET', `/sse?topic=${uniq('hf')}&apikey=${anon(srv)}`, h));
          await conn.until((c) => parseResponses(c.data).length > 0 || c.closed, 5000);
          const [res] = parseResponses(conn.data);
          must(res?.status === 431, `${label}: ${res ? res.status : 'no answer'} ${clip(conn.text(), 60)}`);
          seen.push(`${label} → 431`);
        } finally {
          conn.destroy();
        }
      }
      return seen.join(', ');
    },
  },
  {
    name: 'header-flood-api',
    server: 'dev',
    short: true,
    expect: 'a 70 KiB request head (over the 64 KiB buffer) → 431 on /api/broadcast and on the WebSocket route',
    run: async ({ srv }) => {
      const seen = [];
      for (const path of ['/api/broadcast', `/realtime/v1/websocket?apikey=${anon(srv)}&vsn=2.0.0`, '/healthz']) {
        const conn = await rawConnect(srv);
        try {
          await conn.write(head(path.startsWith('/api') ? 'POST' : 'GET', path, headers(70, 1024)));
          await conn.until((c) => parseResponses(c.data).length > 0 || c.closed, 5000);
          const [res] = parseResponses(conn.data);
          must(res?.status === 431, `${path.split('?')[0]}: ${res ? res.status : 'no answer'}, closed ${conn.closed}`);
          seen.push(res.status);
        } finally {
          conn.destroy();
        }
      }
      return `431 ×${seen.length}`;
    },
  },
  {
    name: 'header-count-flood-api',
    server: 'dev',
    expect: '500 small headers on /healthz and /api/broadcast → 431 (refused, not served)',
    run: async ({ srv }) => {
      const seen = [];
      for (const [method, path] of [['GET', '/healthz'], ['POST', '/api/broadcast']]) {
        const conn = await rawConnect(srv);
        try {
          await conn.write(head(method, path, headers(500, 1)));
          await conn.until((c) => parseResponses(c.data).length > 0 || c.closed, 5000);
          const [res] = parseResponses(conn.data);
          must(res?.status === 431, `${path}: ${res ? res.status : 'no answer'}, closed ${conn.closed}`);
          seen.push(res.status);
        } finally {
          conn.destroy();
        }
      }
      return `431 ×${seen.length}`;
    },
  },
  {
    name: 'cors-credentials-any-origin',
    server: 'dev',
    short: true,
    expect: 'with cors_origins = ["*"], a credentialed request (and preflight) from https://evil.example never gets Access-Control-Allow-Credentials',
    run: async ({ srv }) => {
      const evil = 'https://evil.example';
      const pre = await http(srv, '/api/broadcast', {
        method: 'OPTIONS',
        headers: { origin: evil, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
      });
      const get = await http(srv, '/healthz', { headers: { origin: evil, cookie: 'herald_token=x' } });
      const s = await sse(srv, `topic=${uniq('cors')}`, { headers: { origin: evil, cookie: `herald_token=${anon(srv)}` } });
      s.close();
      for (const [what, r] of [['preflight', pre], ['GET', get], ['SSE', s]]) {
        must(r.headers['access-control-allow-credentials'] === undefined, `${what}: allow-credentials ${r.headers['access-control-allow-credentials']}`);
      }
      return `no allow-credentials on preflight, GET and SSE (allow-origin ${pre.headers['access-control-allow-origin'] ?? 'none'})`;
    },
  },
  {
    name: 'cors-unlisted-origin-production',
    server: 'prod',
    short: true,
    expect: 'with one listed origin, https://evil.example gets neither Access-Control-Allow-Origin nor -Credentials; the listed origin gets both',
    run: async ({ srv }) => {
      const ask = (origin) =>
        http(srv, '/api/broadcast', { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' } });
      const evil = await ask('https://evil.example');
      must(!evil.headers['access-control-allow-origin'] && !evil.headers['access-control-allow-credentials'], `evil: ${JSON.stringify(evil.headers).slice(0, 200)}`);
      const evilSse = await sse(srv, `topic=${uniq('cors')}&apikey=${anon(srv)}`, { headers: { origin: 'https://evil.example' } });
      evilSse.close();
      must(!evilSse.headers['access-control-allow-origin'] && !evilSse.headers['access-control-allow-credentials'], `evil SSE: ${JSON.stringify(evilSse.headers).slice(0, 200)}`);
      const good = await ask(PROD_ORIGIN);
      must(good.headers['access-control-allow-origin'] === PROD_ORIGIN && good.headers['access-control-allow-credentials'] === 'true', `listed: ${JSON.stringify(good.headers).slice(0, 200)}`);
      return 'evil: no CORS headers; listed: origin + credentials';
    },
  },
  {
    name: 'dev-token-cross-origin',
    server: 'dev',
    short: true,
    expect: '/dev/token from another origin (Origin: https://evil.example, or Sec-Fetch-Site: cross-site) → 403; from the same origin → 200 with a token',
    run: async ({ srv }) => {
      const a = await http(srv, '/dev/token?role=service_role', { headers: { origin: 'https://evil.example' } });
      const b = await http(srv, '/dev/token?role=service_role', { headers: { 'sec-fetch-site': 'cross-site' } });
      const c = await http(srv, '/dev/token?role=service_role', { headers: { origin: 'http://127.0.0.1:1' } });
      const own = await http(srv, '/dev/token', { headers: { origin: `http://127.0.0.1:${srv.port}`, 'sec-fetch-site': 'same-origin' } });
      must(a.status === 403 && b.status === 403 && c.status === 403, `cross-origin answers ${a.status}, ${b.status}, ${c.status}`);
      must(!a.text.includes('eyJ') && !b.text.includes('eyJ'), 'a refusal carried a token');
      must(own.status === 200 && own.text.includes('eyJ'), `same origin: ${brief(own)}`);
      return '403 ×3 without a token; same origin 200';
    },
  },
  {
    name: 'dev-token-production',
    server: 'prod',
    short: true,
    expect: '/dev/token on the production server → 404 without a token',
    run: async ({ srv }) => {
      const r = await http(srv, '/dev/token?role=service_role');
      return must(r.status === 404 && !r.text.includes('eyJ'), brief(r)) && brief(r);
    },
  },
  {
    name: 'metrics-production-token',
    server: 'prod',
    short: true,
    expect: '/metrics on the production server: no token → 401, a wrong or prefix token → 401, the metrics token → 200 Prometheus text',
    run: async ({ srv }) => {
      const none = await http(srv, '/metrics');
      const wrong = await http(srv, '/metrics', { headers: { authorization: 'Bearer wrong' } });
      const prefix = await http(srv, '/metrics', { headers: { authorization: `Bearer ${METRICS_TOKEN.slice(0, -1)}` } });
      const basic = await http(srv, '/metrics', { headers: { authorization: `Basic ${METRICS_TOKEN}` } });
      const ok = await http(srv, '/metrics', { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
      for (const [w, r] of [['none', none], ['wrong', wrong], ['prefix', prefix], ['basic', basic]]) must(r.status === 401, `${w}: ${brief(r)}`);
      must(!none.text.includes('herald_connections'), 'the 401 carried metrics');
      must(ok.status === 200 && ok.text.includes('herald_connections'), `with the token: ${brief(ok)}`);
      return '401 ×4, 200 with the token';
    },
  },
];
