// Slow and silent clients: a request head trickled one byte every few seconds on each route, a
// connection that never sends anything, a body announced and trickled, and a crowd of connections
// stopped in the middle of a request line. Each waits out the server's 30 s head or body timeout.
import { readFileSync } from 'node:fs';
import { anon, must, service, uniq } from '../lib/check.mjs';
import { head, parseResponses, rawConnect } from '../lib/net.mjs';

const HEAD_TIMEOUT_S = 30;
const PACE_MS = 3000;

/**
 * Trickles `text` one byte per PACE_MS (the attack's own pacing, which also watches for the close).
 * Resolves { closedAfterMs, sent, answers }.
 */
async function trickle(srv, text, { limitMs = 70_000, pace = PACE_MS } = {}) {
  const conn = await rawConnect(srv);
  try {
    let sent = 0;
    while (!conn.closed && Date.now() - conn.openedAt < limitMs) {
      if (sent < text.length) {
        await conn.write(text[sent]);
        sent += 1;
      }
      await conn.until((c) => c.closed, pace);
    }
    return { closedAfterMs: conn.closed ? conn.closedAt - conn.openedAt : null, sent, answers: parseResponses(conn.data) };
  } finally {
    conn.destroy();
  }
}

/** A trickled head is closed after the head timeout (between 25 and 40 s), never served. */
const slowHead = (makePath, method = 'GET') => async ({ srv }) => {
  const r = await trickle(srv, head(method, makePath(srv), { 'X-Padding': 'p'.repeat(200) }));
  must(r.closedAfterMs !== null, `still open after 70 s (${r.sent} bytes sent)`);
  must(r.closedAfterMs >= 25_000 && r.closedAfterMs <= 40_000, `closed after ${r.closedAfterMs} ms (${r.sent} bytes sent)`);
  must(r.answers.every((a) => a.status === 408 || a.status === 400), `answered ${r.answers.map((a) => a.status)}`);
  return `closed after ${(r.closedAfterMs / 1000).toFixed(1)} s, ${r.sent} bytes sent${r.answers.length ? `, answered ${r.answers[0].status}` : ''}`;
};

/** An authenticated request whose announced body trickles: 408 after the body timeout. */
const slowBody = (makePath) => async ({ srv }) => {
  const conn = await rawConnect(srv);
  try {
    const body = JSON.stringify({ messages: [{ topic: uniq('slowbody'), event: 'e', payload: { pad: 'x'.repeat(500) } }] });
    await conn.write(head('POST', makePath(srv), { Authorization: `Bearer ${service(srv)}`, 'Content-Type': 'application/json', 'Content-Length': String(body.length) }));
    let sent = 0;
    const answered = (c) => parseResponses(c.data).length > 0 || c.closed;
    while (!answered(conn) && Date.now() - conn.openedAt < 50_000) {
      if (sent < body.length) {
        await conn.write(body[sent]);
        sent += 1;
      }
      await conn.until(answered, 2000);
    }
    const ms = Date.now() - conn.openedAt;
    const [res] = parseResponses(conn.data);
    must(res?.status === 408, `answer ${res ? `${res.status} ${res.text}` : 'none'} after ${ms} ms, ${sent}/${body.length} body bytes`);
    must(ms >= 25_000 && ms <= 40_000, `408 after ${ms} ms`);
    return `408 after ${(ms / 1000).toFixed(1)} s (${sent}/${body.length} body bytes sent)`;
  } finally {
    conn.destroy();
  }
};

/** utime + stime of `pid` in seconds. */
function cpuSeconds(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export default [
  {
    name: 'slowloris-api-broadcast',
    server: 'dev',
    short: true,
    slow: true,
    expect: `a POST /api/broadcast head sent one byte every 3 s is closed after the ${HEAD_TIMEOUT_S} s head timeout`,
    timeout: 80_000,
    run: slowHead(() => '/api/broadcast', 'POST'),
  },
  {
    name: 'slowloris-sse',
    server: 'dev',
    short: true,
    slow: true,
    expect: `a GET /sse head sent one byte every 3 s is closed after the ${HEAD_TIMEOUT_S} s head timeout`,
    timeout: 80_000,
    run: slowHead((srv) => `/sse?topic=${uniq('sl')}&apikey=${anon(srv)}`),
  },
  {
    name: 'slowloris-websocket',
    server: 'dev',
    short: true,
    slow: true,
    expect: `a WebSocket handshake sent one byte every 3 s is closed after the ${HEAD_TIMEOUT_S} s head timeout`,
    timeout: 80_000,
    run: slowHead((srv) => `/realtime/v1/websocket?apikey=${anon(srv)}&vsn=2.0.0`),
  },
  {
    name: 'slowloris-healthz',
    server: 'prod',
    slow: true,
    expect: `a GET /healthz head sent one byte every 3 s (production server) is closed after the ${HEAD_TIMEOUT_S} s head timeout`,
    timeout: 80_000,
    run: slowHead(() => '/healthz'),
  },
  {
    name: 'silent-tcp-connection',
    server: 'dev',
    short: true,
    slow: true,
    expect: `a TCP connection that never sends a byte is closed after the ${HEAD_TIMEOUT_S} s head timeout`,
    run: async ({ srv }) => {
      const conns = await Promise.all(Array.from({ length: 20 }, () => rawConnect(srv)));
      try {
        await Promise.all(conns.map((c) => c.waitClosed(50_000)));
        const ms = conns.map((c) => (c.closed ? c.closedAt - c.openedAt : null));
        must(ms.every((m) => m !== null), `${ms.filter((m) => m === null).length} of 20 still open after 50 s`);
        must(ms.every((m) => m >= 25_000 && m <= 40_000), `closed after ${Math.min(...ms)}–${Math.max(...ms)} ms`);
        must(conns.every((c) => c.data.length === 0), 'the server wrote to a silent connection');
        return `20 closed after ${(Math.min(...ms) / 1000).toFixed(1)}–${(Math.max(...ms) / 1000).toFixed(1)} s`;
      } finally {
        conns.forEach((c) => c.destroy());
      }
    },
  },
  {
    name: 'slow-body-batch',
    server: 'dev',
    short: true,
    slow: true,
    expect: 'an authenticated batch whose announced body arrives one byte every 2 s → 408 after the 30 s body timeout',
    run: slowBody(() => '/api/broadcast'),
  },
  {
    name: 'slow-body-single',
    server: 'prod',
    slow: true,
    expect: 'an authenticated single-message POST whose body arrives one byte every 2 s → 408 after the 30 s body timeout',
    run: slowBody(() => `/api/broadcast/${uniq('slow')}/events/e`),
  },
  {
    name: 'partial-request-line-crowd',
    server: 'dev',
    short: true,
    slow: true,
    expect: '300 connections that each send "GET /ss" and stop cost the server under 10% of a core (above its idle use) while they wait, and are all closed in the end',
    timeout: 90_000,
    run: async ({ srv }) => {
      // Measurement windows of the attack (not synchronisation): CPU time over 5 s, before and during.
      const cpuShare = async () => {
        const t0 = Date.now();
        const c0 = cpuSeconds(srv.pid);
        await new Promise((r) => setTimeout(r, 5000));
        return (cpuSeconds(srv.pid) - c0) / ((Date.now() - t0) / 1000);
      };
      const idle = await cpuShare();
      const conns = await Promise.all(Array.from({ length: 300 }, () => rawConnect(srv)));
      try {
        await Promise.all(conns.map((c) => c.write('GET /ss')));
        const busy = await cpuShare();
        await Promise.all(conns.map((c) => c.waitClosed(70_000)));
        const open = conns.filter((c) => !c.closed).length;
        const latest = Math.max(...conns.filter((c) => c.closed).map((c) => c.closedAt - c.openedAt));
        const pct = (v) => `${(v * 100).toFixed(0)}%`;
        must(busy - idle < 0.1, `server CPU ${pct(busy)} of a core while 300 partial request lines waited (idle ${pct(idle)})`);
        must(open === 0, `${open} still open after 70 s`);
        return `CPU ${pct(busy)} (idle ${pct(idle)}); all closed within ${(latest / 1000).toFixed(1)} s`;
      } finally {
        conns.forEach((c) => c.destroy());
      }
    },
  },
];
