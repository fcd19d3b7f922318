// Helpers for the Server-Sent Events tests: publishing over the HTTP API, a loopback TCP proxy
// whose connections can be broken (both sides destroyed) and whose new connections can be held
// back, and a recorder around the npm `eventsource` client.
import assert from 'node:assert/strict';
import { connect, createServer } from 'node:net';
import { EventSource } from 'eventsource';
import { batch, post } from './http.mjs';
import { serviceToken } from './tokens.mjs';
import { Inbox, waitFor } from './wait.mjs';

/** Publishes `messages` ({ topic, event, payload }) in one POST /api/broadcast; expects 202. */
export async function publish(server, ...messages) {
  const res = await post(server, '/api/broadcast', { token: serviceToken(), json: batch(...messages) });
  assert.equal(res.status, 202, `POST /api/broadcast: ${res.status} ${res.text}`);
}

/** Publishes `{ n }` for every n in `from..to` (inclusive) to each topic, interleaved, in one request. */
export function publishRange(server, topics, from, to, event = 'e') {
  const messages = [];
  for (let n = from; n <= to; n += 1) for (const topic of topics) messages.push({ topic, event, payload: { n } });
  return publish(server, ...messages);
}

/** [from, ..., to] */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * A loopback TCP proxy to 127.0.0.1:`targetPort`. Every accepted connection is recorded as
 * { client, upstream, sent, acceptedAt, closedAt } where `sent` is the text the client sent (its
 * first 64 KiB); requests() parses the GET request heads out of it. break() destroys both sides of
 * every open connection (each peer sees the connection die); hold() keeps new connections waiting,
 * unforwarded, until release().
 */
export async function startBreakingProxy(targetPort) {
  const connections = [];
  const waiting = [];
  let holding = false;

  const forward = (conn) => {
    const { client } = conn;
    const upstream = connect(targetPort, '127.0.0.1');
    conn.upstream = upstream;
    upstream.setNoDelay(true);
    upstream.on('error', () => {});
    for (const chunk of conn.early) upstream.write(chunk);
    conn.early = null;
    client.on('data', (chunk) => upstream.write(chunk));
    upstream.on('data', (chunk) => {
      if (!client.destroyed) client.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  };

  const server = createServer((client) => {
    const conn = { client, upstream: null, sent: '', early: [], acceptedAt: Date.now(), closedAt: null };
    connections.push(conn);
    client.setNoDelay(true);
    client.on('error', () => {});
    client.on('close', () => {
      conn.closedAt = Date.now();
    });
    const sniff = (chunk) => {
      if (conn.early) conn.early.push(chunk);
      if (conn.sent.length < 65536) conn.sent += chunk.toString('latin1');
    };
    client.on('data', sniff);
    // Until forward() runs, what the client sends is kept in `early`.
    if (holding) waiting.push(conn);
    else forward(conn);
  });
  await waitFor(
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    }),
    5000,
    'the proxy to listen',
  );
  return {
    port: server.address().port,
    connections,
    /** Every GET request received so far, in order: { path, headers (lower-case names), conn }. */
    requests() {
      const out = [];
      for (const conn of connections) {
        for (const head of conn.sent.match(/GET \S+ HTTP\/1\.1\r\n[\s\S]*?\r\n\r\n/g) ?? []) {
          const [requestLine, ...lines] = head.trim().split('\r\n');
          const headers = {};
          for (const line of lines) {
            const i = line.indexOf(':');
            if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
          }
          out.push({ path: requestLine.split(' ')[1], headers, conn });
        }
      }
      return out;
    },
    /** Destroys both sides of every open connection; returns how many there were. */
    break() {
      let n = 0;
      for (const c of connections) {
        if (c.closedAt !== null) continue;
        n += 1;
        c.client.destroy();
        c.upstream?.destroy();
      }
      return n;
    },
    hold() {
      holding = true;
    },
    /** Stops holding and forwards every connection that was kept waiting. */
    release() {
      holding = false;
      for (const conn of waiting.splice(0)) if (!conn.client.destroyed) forward(conn);
    },
    async close() {
      for (const c of connections) {
        c.client.destroy();
        c.upstream?.destroy();
      }
      if (server.listening) await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const EVENT_TYPES = ['broadcast', 'system', 'presence_state', 'presence_diff', 'message'];

/**
 * Opens an `eventsource` EventSource on `url` and records what it dispatches. Returns
 * { es, events, opens, errors, close() }: `events` is an Inbox of { type, data, lastEventId, at }
 * (data parsed as JSON when it is JSON), `opens` of timestamps, `errors` of { message, code, at }.
 * `headers` are added to every request (through the client's `fetch` option).
 */
export function recordEventSource(url, { headers } = {}) {
  const init = headers
    ? { fetch: (input, options) => fetch(input, { ...options, headers: { ...options.headers, ...headers } }) }
    : undefined;
  const es = new EventSource(url, init);
  const events = new Inbox(`events from ${url}`);
  const opens = new Inbox(`opens of ${url}`);
  const errors = new Inbox(`errors of ${url}`);
  for (const type of EVENT_TYPES) {
    es.addEventListener(type, (ev) => {
      let data = ev.data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        // keep the raw text
      }
      events.push({ type, data, lastEventId: ev.lastEventId, at: Date.now() });
    });
  }
  es.addEventListener('open', () => opens.push(Date.now()));
  es.addEventListener('error', (ev) => errors.push({ message: ev.message, code: ev.code, at: Date.now() }));
  return { es, events, opens, errors, close: () => es.close() };
}

/** The broadcasts among recorded events, as { topic, n, offset, replayed, lastEventId }. */
export function broadcasts(events) {
  return events
    .filter((e) => e.type === 'broadcast')
    .map((e) => ({
      topic: e.data.topic,
      n: e.data.payload?.n,
      offset: e.data.meta?.offset,
      replayed: e.data.meta?.replayed === true,
      lastEventId: e.lastEventId,
    }));
}

/** Offsets received on `topic`, in arrival order (duplicates kept). */
export const offsetsOf = (list, topic) => list.filter((b) => b.topic === topic).map((b) => b.offset);

/** A compact description of recorded events for failure messages. */
export function describeEvents(events, last = 60) {
  return events
    .slice(-last)
    .map((e) => {
      if (e.type === 'broadcast') {
        const m = e.data.meta ?? {};
        return `  broadcast ${e.data.topic} n=${e.data.payload?.n} offset=${m.offset}${m.replayed ? ' replayed' : ''}`;
      }
      return `  ${e.type} ${JSON.stringify(e.data)}`;
    })
    .join('\n');
}
