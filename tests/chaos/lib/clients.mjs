// The clients of the chaos suite, each wired to a Ledger: subscribers (the project's SDK over
// WebSocket or SSE, @supabase/realtime-js with the recovery extension in its join config, and a
// bare `eventsource` EventSource resuming by Last-Event-ID) and publishers (SDK sends with ack,
// realtime-js sends with ack, HTTP POST /api/broadcast with an idempotency key, retried until 2xx).
import { RealtimeClient } from '@supabase/realtime-js';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { Herald } from '../../../clients/js/herald.js';
import { anonToken, serviceToken } from './tokens.mjs';
import { pace } from './wait.mjs';

const quiet = () => {};

/** A `ws` WebSocket class whose connections leave from `localAddress` (127.0.0.x). */
export function boundWebSocket(localAddress) {
  if (!localAddress) return WebSocket;
  return class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { localAddress });
    }
  };
}

/** Options of an SDK client for the suite (no browser globals, quick heartbeats unless told). */
export function sdkOptions({ transport = 'websocket', heartbeatMs = 5000, localAddress, backoff } = {}) {
  return {
    token: anonToken(),
    WebSocket: boundWebSocket(localAddress),
    EventSource,
    transports: [transport],
    storage: null,
    window: null,
    document: null,
    heartbeatIntervalMs: heartbeatMs,
    heartbeatTimeoutMs: heartbeatMs,
    sendTimeoutMs: 60_000,
    ...(backoff ? { backoff } : {}),
    logger: quiet,
  };
}

/** An SDK subscriber of `topics` (WebSocket or SSE transport) at `baseUrl`. */
export function sdkSubscriber(ledger, name, baseUrl, topics, opts = {}) {
  const kind = opts.kind ?? `SDK (${opts.transport ?? 'websocket'})`;
  const acc = ledger.subscriber(name, kind, topics);
  const herald = new Herald(baseUrl, sdkOptions(opts));
  let lives = 0;
  herald.on('state', (s) => {
    if (s.state === 'live') {
      lives += 1;
      if (lives > 1) acc.reconnects += 1;
    }
    if (s.state === 'reconnecting' && s.reason) acc.closeReasons.push(s.reason);
  });
  // `unaccounted` topics are joined but kept out of the account (channels without history, whose
  // rejoins are told recovered:false by design).
  const unaccounted = new Set(opts.unaccounted ?? []);
  acc.expectedReloads = 0;
  const channels = [...topics, ...unaccounted].map((topic) => {
    const ch = herald.channel(topic);
    if (!unaccounted.has(topic)) ch.on('broadcast', '*', (m) => acc.deliver(topic, m.meta, m.payload?.k));
    ch.on('recovery', () => {
      if (unaccounted.has(topic)) acc.expectedReloads += 1;
      else acc.recoveredFalse += 1;
    });
    ch.subscribe();
    return ch;
  });
  return {
    acc,
    herald,
    channels,
    ready: () => Promise.all(channels.map((c) => c.ready())),
    sdkDuplicatesDropped: () => channels.reduce((a, c) => a + c.stats.duplicates, 0),
    close: () => herald.disconnect(),
  };
}

/**
 * A realtime-js subscriber of one topic. Its join config carries Herald's recovery extension
 * (`broadcast.recover`), updated in place on every message, so realtime-js's own rejoin after a
 * reconnect asks for what it missed.
 */
export function rtjsSubscriber(ledger, name, wsBase, topic, { heartbeatMs = 5000 } = {}) {
  const acc = ledger.subscriber(name, 'realtime-js (WebSocket)', [topic]);
  const client = new RealtimeClient(`${wsBase}/socket`, {
    params: { apikey: anonToken() },
    transport: WebSocket,
    heartbeatIntervalMs: heartbeatMs,
    logger: (kind, msg) => {
      if (typeof msg === 'string' && msg.startsWith('heartbeat timeout')) acc.closeReasons.push('heartbeat timeout');
    },
  });
  const recover = { epoch: '', offset: 0 };
  const ch = client.channel(topic, { config: { broadcast: { self: false, ack: false, recover } } });
  let joins = 0;
  let joined;
  const firstJoin = new Promise((r) => {
    joined = r;
  });
  ch.joinPush.receive('ok', (resp) => {
    joins += 1;
    const rec = resp?.recovery;
    if (joins > 1) acc.reconnects += 1;
    if (rec && !rec.recovered && recover.epoch !== '') acc.recoveredFalse += 1;
    if (rec && (!rec.recovered || recover.epoch === '')) {
      recover.epoch = rec.epoch;
      recover.offset = rec.offset;
    }
    joined();
  });
  ch.on('broadcast', { event: '*' }, (m) => {
    const meta = m.meta;
    if (meta && meta.epoch === recover.epoch && meta.offset > recover.offset) recover.offset = meta.offset;
    else if (meta && meta.epoch !== recover.epoch) {
      recover.epoch = meta.epoch;
      recover.offset = meta.offset;
    }
    acc.deliver(topic, meta, m.payload?.k);
  });
  ch.subscribe();
  return { acc, client, ready: () => firstJoin, close: () => client.removeAllChannels().then(() => client.disconnect()) };
}

/**
 * A bare EventSource (`eventsource` package) on `topics`. It reconnects by itself with
 * Last-Event-ID; if it gives up (a non-2xx answer while the server restarts) a new one is opened
 * with ?last_event_id= of the last event seen, as a page reload would.
 */
export function sseSubscriber(ledger, name, baseUrl, topics, { fetchImpl } = {}) {
  const acc = ledger.subscriber(name, 'EventSource (SSE)', topics);
  let last = null;
  let es = null;
  let closed = false;
  let readyOnce;
  const ready = new Promise((r) => {
    readyOnce = r;
  });
  let opens = 0;
  const open = () => {
    const url = new URL('/sse', baseUrl);
    for (const t of topics) url.searchParams.append('topic', t);
    url.searchParams.set('apikey', anonToken());
    if (last) url.searchParams.set('last_event_id', last);
    es = new EventSource(url, fetchImpl ? { fetch: fetchImpl } : undefined);
    let readies = 0;
    es.addEventListener('ready', (e) => {
      opens += 1;
      readies += 1;
      if (opens > 1) acc.reconnects += 1;
      // A second `ready` on the same EventSource is its own reconnect, which sends Last-Event-ID.
      if (readies > 1) acc.lastEventIdResumes = (acc.lastEventIdResumes ?? 0) + 1;
      else if (opens > 1) acc.queryResumes = (acc.queryResumes ?? 0) + 1;
      if (e.lastEventId) last = e.lastEventId;
      readyOnce();
    });
    es.addEventListener('broadcast', (e) => {
      last = e.lastEventId || last;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        acc.unknown += 1;
        return;
      }
      acc.deliver(m.topic, m.meta, m.payload?.k);
    });
    es.addEventListener('system', (e) => {
      try {
        const d = JSON.parse(e.data);
        if (d.recovered === false) acc.recoveredFalse += 1;
      } catch {
        acc.unknown += 1;
      }
    });
    es.onerror = () => {
      if (closed) return;
      if (es.readyState === EventSource.CLOSED) {
        // Gave up (a non-2xx while the node restarts): open a new one, as a reload would, after a pause.
        setTimeout(() => {
          if (!closed) open();
        }, 200 + Math.random() * 300);
      }
    };
  };
  open();
  return {
    acc,
    ready: () => ready,
    /** Closes the stream and opens a new one from the last cursor, as a page reload does. */
    reopen: () => {
      if (closed) return;
      es?.close();
      open();
    },
    close: () => {
      closed = true;
      es?.close();
    },
  };
}

/** Publishes through the SDK over WebSocket with ack; `send` resolves once stored (or rejects). */
export function sdkPublisher(baseUrl, topics, opts = {}) {
  const herald = new Herald(baseUrl, sdkOptions(opts));
  const chans = new Map(topics.map((t) => [t, herald.channel(t, { broadcast: { ack: true } })]));
  for (const c of chans.values()) c.subscribe();
  return {
    herald,
    ready: () => Promise.all([...chans.values()].map((c) => c.ready())),
    send: (topic, payload) => chans.get(topic).send('m', payload, { idempotencyKey: payload.k }),
    close: () => herald.disconnect(),
  };
}

/** Publishes through realtime-js with ack (`channel.send` resolves 'ok', 'timed out' or 'error'). */
export function rtjsPublisher(wsBase, topics, { heartbeatMs = 5000 } = {}) {
  const client = new RealtimeClient(`${wsBase}/socket`, {
    params: { apikey: anonToken() },
    transport: WebSocket,
    heartbeatIntervalMs: heartbeatMs,
    logger: quiet,
  });
  const chans = new Map();
  const joined = [];
  for (const t of topics) {
    const ch = client.channel(t, { config: { broadcast: { ack: true, self: false } } });
    joined.push(new Promise((r) => ch.subscribe((s) => s === 'SUBSCRIBED' && r())));
    chans.set(t, ch);
  }
  return {
    client,
    ready: () => Promise.all(joined),
    send: async (topic, payload) => {
      const r = await chans.get(topic).send({ type: 'broadcast', event: 'm', payload }, { timeout: 10_000 });
      if (r !== 'ok') throw new Error(`realtime-js send: ${r}`);
    },
    close: () => client.removeAllChannels().then(() => client.disconnect()),
  };
}

/**
 * Publishes over HTTP (POST /api/broadcast, one message, idempotency key = payload.k). A network
 * error or a 5xx is retried with the same key until `retryMs` has passed; 202 is accepted.
 */
export function httpPublisher(baseUrlFn, { retryMs = 30_000 } = {}) {
  const tok = serviceToken();
  return {
    send: async (topic, payload) => {
      const deadline = Date.now() + retryMs;
      let lastErr;
      while (Date.now() < deadline) {
        try {
          const res = await fetch(`${baseUrlFn()}/api/broadcast`, {
            method: 'POST',
            headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
            body: JSON.stringify({ messages: [{ topic, event: 'm', payload, idempotency_key: payload.k, private: false }] }),
            signal: AbortSignal.timeout(5000),
          });
          await res.arrayBuffer();
          if (res.status === 202) return;
          if (res.status < 500 && res.status !== 429) throw Object.assign(new Error(`HTTP ${res.status}`), { refused: true });
          lastErr = new Error(`HTTP ${res.status}`);
        } catch (err) {
          if (err.refused) throw err;
          lastErr = err;
        }
        // Retry pacing while the node is down (the key makes the retry safe).
        await pace(100);
      }
      throw lastErr ?? new Error('HTTP publish timed out');
    },
  };
}

/**
 * Drives `publisher` at `ratePerSec` on `topics` until stop(); every attempt goes to the ledger
 * (accepted on ack/2xx, unacked when it failed or timed out). At most `inflight` at once.
 */
export function loadLoop(ledger, via, publisher, topics, { ratePerSec = 20, inflight = 8, payloadBytes = 0 } = {}) {
  let seq = 0;
  let running = true;
  let pending = 0;
  const pad = payloadBytes > 0 ? 'x'.repeat(payloadBytes) : undefined;
  const settled = new Set();
  const latencies = [];
  const loop = (async () => {
    const interval = 1000 / ratePerSec;
    let next = performance.now();
    while (running) {
      if (pending < inflight) {
        seq += 1;
        const k = `${via}-${seq}`;
        const topic = topics[seq % topics.length];
        ledger.attempt(k, topic, via);
        pending += 1;
        const t0 = performance.now();
        const p = publisher
          .send(topic, pad ? { k, pad } : { k })
          .then(
            () => {
              ledger.settle(k, 'accepted');
              latencies.push(performance.now() - t0);
            },
            (err) => ledger.settle(k, err?.refused ? 'refused' : 'unacked'),
          )
          .finally(() => {
            pending -= 1;
            settled.delete(p);
          });
        settled.add(p);
      }
      next += interval;
      const wait = next - performance.now();
      // Pacing of the publish rate.
      if (wait > 0) await pace(wait);
      else next = performance.now();
    }
  })();
  return {
    get sent() {
      return seq;
    },
    latencies,
    /** Stops publishing and waits for every attempt to settle. */
    async stop() {
      running = false;
      await loop;
      await Promise.allSettled([...settled]);
    },
  };
}
