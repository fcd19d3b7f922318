// Streams that misbehave: SSE clients (HTTP/1.1 and h2c) that never read while their topic floods,
// an h2c connection opening more streams than allowed, h2c garbage, forged SSE cursors and a request
// pipelined behind an SSE request.
import { connect as h2connect, constants as H2 } from 'node:http2';
import { anon, must, service, uniq } from '../lib/check.mjs';
import { head, http, parseResponses, rawConnect, sse } from '../lib/net.mjs';
import { rssMb } from '../lib/servers.mjs';
import { waitFor } from '../../support/wait.mjs';

const publish = (srv, messages) =>
  http(srv, '/api/broadcast', { method: 'POST', headers: { authorization: `Bearer ${service(srv)}` }, json: { messages } });

/** Floods `topic` with `rounds` × 50 messages of 5 KB; every publish must be accepted. */
async function flood(srv, topic, rounds = 60) {
  for (let i = 0; i < rounds; i++) {
    const r = await publish(srv, Array.from({ length: 50 }, (_, k) => ({ topic, event: 'bulk', payload: { k, pad: 'p'.repeat(5000) } })));
    must(r.status === 202, `flood publish ${i}: ${r.status} ${r.text}`);
  }
}

function h2session(srv) {
  return new Promise((resolve, reject) => {
    const s = h2connect(`http://127.0.0.1:${srv.port}`);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

export default [
  {
    name: 'sse-h2c-never-read',
    server: 'dev',
    short: true,
    expect: 'an h2c SSE stream whose client never reads while 3000 messages of 5 KB flow: publishes keep being accepted, memory stays bounded (< 150 MB growth), the canary misses nothing',
    timeout: 60_000,
    run: async ({ srv }) => {
      const topic = uniq('h2slow');
      const session = await h2session(srv);
      try {
        const rss0 = rssMb(srv.pid);
        const stream = session.request({ ':path': `/sse?topic=${topic}&apikey=${anon(srv)}` });
        const status = await waitFor(new Promise((r) => stream.once('response', (h) => r(h[':status']))), 5000, 'h2 SSE response');
        must(status === 200, `h2 SSE status ${status}`);
        stream.pause();
        let ended = null;
        stream.on('close', () => {
          ended = stream.rstCode;
        });
        await flood(srv, topic);
        const grown = rssMb(srv.pid) - rss0;
        must(grown < 150, `RSS grew ${grown.toFixed(0)} MB`);
        return `3000 messages accepted, RSS ${grown >= 0 ? "+" : ""}${grown.toFixed(1)} MB, stream ${ended === null ? 'still open (flow-controlled)' : `reset (${ended})`}`;
      } finally {
        session.destroy();
      }
    },
  },
  {
    name: 'sse-h2c-stalled-connection-closed',
    server: 'dev',
    slow: true,
    expect: 'an h2c connection whose SSE stream is never read, with its window full, is closed by the server within sse_keepalive (15 s) + the 30 s stall timeout (75 s with slack)',
    timeout: 90_000,
    run: async ({ srv }) => {
      const topic = uniq('h2stall');
      const session = await h2session(srv);
      session.on('error', () => {});
      try {
        const closed = new Promise((r) => session.once('close', r));
        const stream = session.request({ ':path': `/sse?topic=${topic}&apikey=${anon(srv)}` });
        stream.on('error', () => {});
        const status = await waitFor(new Promise((r) => stream.once('response', (h) => r(h[':status']))), 5000, 'h2 SSE response');
        must(status === 200, `h2 SSE status ${status}`);
        stream.pause();
        await flood(srv, topic);
        const t0 = Date.now();
        await waitFor(closed, 75_000, 'the server to close the stalled h2c connection');
        return `closed ${((Date.now() - t0) / 1000).toFixed(1)} s after the flood`;
      } finally {
        session.destroy();
      }
    },
  },
  {
    name: 'sse-http1-never-read',
    server: 'dev',
    short: true,
    expect: 'an HTTP/1.1 SSE stream whose client never reads while 3000 messages of 5 KB flow: publishes accepted, the stream is dropped as a slow consumer, memory bounded',
    timeout: 60_000,
    run: async ({ srv }) => {
      const topic = uniq('h1slow');
      const conn = await rawConnect(srv);
      try {
        await conn.write(head('GET', `/sse?topic=${topic}&apikey=${anon(srv)}`));
        must(await conn.until((c) => c.text().includes(': connected'), 5000), `no stream: ${conn.text().slice(0, 100)}`);
        conn.socket.pause();
        const rss0 = rssMb(srv.pid);
        await flood(srv, topic);
        const grown = rssMb(srv.pid) - rss0;
        must(grown < 150, `RSS grew ${grown.toFixed(0)} MB`);
        conn.socket.resume();
        const closed = await conn.waitClosed(15_000);
        must(closed, 'the never-read stream was not dropped');
        return `3000 accepted, RSS ${grown >= 0 ? "+" : ""}${grown.toFixed(1)} MB, stream dropped after ${Math.round(conn.data.length / 1024)} KiB`;
      } finally {
        conn.destroy();
      }
    },
  },
  {
    name: 'h2c-stream-flood',
    server: 'dev',
    short: true,
    expect: '1000 SSE streams requested at once on one h2c connection: no more than the advertised SETTINGS_MAX_CONCURRENT_STREAMS (at most 256) are served at a time; when the connection drops, every stream slot is released',
    timeout: 40_000,
    run: async ({ srv }) => {
      const base = (await http(srv, '/healthz')).json.connections;
      const session = await h2session(srv);
      session.on('error', () => {});
      let ok = 0;
      let max;
      try {
        await waitFor(new Promise((r) => (session.remoteSettings ? r() : session.once('remoteSettings', r))), 5000, 'server SETTINGS');
        max = session.remoteSettings.maxConcurrentStreams;
        must(max >= 1 && max <= 256, `server allows ${max} concurrent streams`);
        for (let i = 0; i < 1000; i++) {
          const st = session.request({ ':path': `/sse?topic=${uniq('h2f')}&apikey=${anon(srv)}` });
          st.on('error', () => {});
          st.once('response', (h) => {
            if (h[':status'] === 200) ok += 1;
          });
        }
        await waitFor(() => ok >= max, 15_000, () => `${max} streams served (have ${ok})`);
        const during = (await http(srv, '/healthz')).json.connections;
        must(ok <= max && during - base <= max, `${ok} streams served, connections ${base} → ${during}`);
      } finally {
        session.destroy();
      }
      const after = await waitFor(async () => {
        const n = (await http(srv, '/healthz')).json.connections;
        return n <= base ? n : null;
      }, 10_000, 'stream slots to be released');
      return `${ok} of 1000 served at once (limit ${max}); connections back to ${after}`;
    },
  },
  {
    name: 'h2c-garbage-after-preface',
    server: 'dev',
    short: true,
    expect: 'the h2c preface followed by garbage frames: the connection is closed (GOAWAY) within 5 s',
    run: async ({ srv }) => {
      const conn = await rawConnect(srv);
      try {
        const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
        const settings = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
        const garbage = Buffer.from([0, 0, 8, 0xee, 0xff, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        await conn.write(Buffer.concat([preface, settings, Buffer.from([0, 0, 4, 1, 5, 0, 0, 0, 2, 0xff, 0xfe, 0xfd, 0xfc]), garbage]));
        const closed = await conn.waitClosed(5000);
        const goaway = conn.data.includes(Buffer.from([7]));
        must(closed, 'connection still open after garbage frames');
        return `closed${goaway ? ' (GOAWAY seen)' : ''}`;
      } finally {
        conn.destroy();
      }
    },
  },
  {
    name: 'sse-forged-cursor',
    server: 'dev',
    expect: 'an SSE stream resuming from a forged Last-Event-ID (and ?last_event_id=) opens live (200) and still delivers new messages',
    run: async ({ srv }) => {
      const topic = uniq('cursor');
      const forged = Buffer.from(JSON.stringify([{ c: 1, e: 'x', o: 9e18 }])).toString('base64url');
      const a = await sse(srv, `topic=${topic}&apikey=${anon(srv)}`, { headers: { 'last-event-id': forged } });
      const b = await sse(srv, `topic=${topic}&apikey=${anon(srv)}&last_event_id=${'%ff'.repeat(2000)}`);
      try {
        must(a.status === 200 && b.status === 200, `statuses ${a.status}, ${b.status}`);
        must((await publish(srv, [{ topic, event: 'after', payload: { n: 1 } }])).status === 202, 'publish');
        await waitFor(() => a.text().includes('"after"') && b.text().includes('"after"'), 5000, 'the message on both streams');
        return '200 ×2, live delivery';
      } finally {
        a.close();
        b.close();
      }
    },
  },
  {
    name: 'sse-pipelined-request',
    server: 'dev',
    expect: 'a /dev/token request pipelined behind GET /sse is never answered on that connection (the SSE stream keeps serving, or the connection is closed)',
    run: async ({ srv }) => {
      const topic = uniq('pipe');
      const conn = await rawConnect(srv);
      try {
        await conn.write(head('GET', `/sse?topic=${topic}&apikey=${anon(srv)}`) + head('GET', '/dev/token?role=service_role'));
        await conn.until((c) => c.text().includes(': connected') || c.closed, 5000);
        if (!conn.closed) {
          must((await publish(srv, [{ topic, event: 'after', payload: {} }])).status === 202, 'publish');
          await conn.until((c) => c.text().includes('"after"') || c.closed, 5000);
        }
        must(!conn.text().includes('eyJ'), 'the pipelined /dev/token was answered on the SSE connection');
        must(conn.closed || conn.text().includes('"after"'), `neither streaming nor closed: ${conn.text().slice(0, 120)}`);
        return conn.closed ? 'connection closed, nothing served' : 'stream keeps serving; the pipelined request is not answered';
      } finally {
        conn.destroy();
      }
    },
  },
];
