// Floods and caps: joins, messages, HTTP publishes, channels per connection, connections per node
// and from one address, presence, idle and slow sockets, replayed idempotency keys and huge
// postgres_changes bindings.
import { anon, clip, must, reasonOf, service, uniq, withSocket } from '../lib/check.mjs';
import { brief, http, sse } from '../lib/net.mjs';
import { broadcastsOn, Phx } from '../lib/phoenix.mjs';
import { waitFor } from '../../support/wait.mjs';

const publish = (srv, messages, tok = service(srv), headers = {}) =>
  http(srv, '/api/broadcast', { method: 'POST', headers: { authorization: `Bearer ${tok}`, ...headers }, json: { messages } });

/** Opens `n` sockets (in parallel batches); returns them. */
async function openMany(srv, n, opts = {}) {
  const all = [];
  for (let i = 0; i < n; i += 50) {
    const batch = await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => Phx.open(srv, anon(srv), { ms: 10_000, ...opts })));
    all.push(...batch);
  }
  return all;
}

async function connections(srv) {
  return (await http(srv, '/healthz')).json.connections;
}

export default [
  {
    name: 'ws-join-flood',
    server: 'dev',
    short: true,
    expect: '150 joins in one burst (max_joins_per_second 100): ClientJoinRateLimitReached: Too many joins per second, then close 4029',
    run: async ({ srv }) => {
      const phx = await Phx.open(srv, anon(srv));
      try {
        const topic = `realtime:${uniq('jf')}`;
        for (let i = 0; i < 150; i++) phx.send(topic, 'phx_join', { config: {} }, { joinRef: `j${i}`, ref: `j${i}` });
        const refused = await phx.expect((f) => f.event === 'phx_reply' && f.payload?.response?.reason === 'ClientJoinRateLimitReached: Too many joins per second', 10_000, 'join rate refusal');
        const c = await phx.waitClose(5000, 'close after the join flood');
        must(c.code === 4029, `closed with ${c.code}`);
        return `refused at join ${refused.ref}, close 4029`;
      } finally {
        phx.close();
      }
    },
  },
  {
    name: 'ws-message-flood',
    server: 'dev',
    short: true,
    expect: '1500 broadcasts in one burst (max_messages_per_second 1000): system "Too many messages per second", then phx_close; the socket stays open',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('mf')}`;
        await phx.join(topic);
        for (let i = 0; i < 1500; i++) phx.broadcast(topic, 'flood', { i });
        const sys = await phx.expect((f) => f.topic === topic && f.event === 'system', 10_000, 'rate system message');
        must(sys.payload?.message === 'Too many messages per second', `system ${JSON.stringify(sys.payload)}`);
        await phx.expect((f) => f.topic === topic && f.event === 'phx_close', 5000, 'phx_close');
        must(await phx.heartbeat(), 'socket unusable after the flood');
        return 'system Too many messages per second, phx_close, socket open';
      }),
  },
  {
    name: 'http-flood-429-retry-after',
    server: 'small',
    short: true,
    expect: 'an anon HTTP flood past max_http_messages_per_second (50) gets 429 Too many requests with Retry-After',
    run: async ({ srv }) => {
      const tok = anon(srv);
      const msgs = Array.from({ length: 10 }, () => ({ topic: uniq('flood'), event: 'e', payload: {} }));
      const results = await Promise.all(Array.from({ length: 20 }, () => publish(srv, msgs, tok)));
      const limited = results.filter((r) => r.status === 429);
      must(limited.length > 0, `statuses ${[...new Set(results.map((r) => r.status))]}`);
      must(limited.every((r) => r.json?.message === 'Too many requests' && Number(r.headers['retry-after']) >= 1), `429 ${brief(limited[0])} retry-after ${limited[0].headers['retry-after']}`);
      return `${limited.length}/20 answered 429 with Retry-After ${limited[0].headers['retry-after']}`;
    },
  },
  {
    name: 'http-flood-does-not-starve-service-role',
    server: 'small',
    short: true,
    expect: 'during an anon flood that is answered 429, every service_role publish is accepted (202) and delivered',
    run: async ({ srv }) => {
      const topic = uniq('starve');
      return withSocket(srv, async (phx) => {
        await phx.join(`realtime:${topic}`);
        const tok = anon(srv);
        let stop = false;
        let limited = 0;
        const flood = (async () => {
          while (!stop) {
            const rs = await Promise.all(Array.from({ length: 10 }, () => publish(srv, [{ topic: uniq('f'), event: 'e', payload: {} }], tok)));
            limited += rs.filter((r) => r.status === 429).length;
          }
        })();
        const statuses = [];
        try {
          await waitFor(() => limited > 0, 5000, 'the anon flood to be limited');
          for (let i = 0; i < 10; i++) statuses.push((await publish(srv, [{ topic, event: 'svc', payload: { i } }])).status);
        } finally {
          stop = true;
          await flood;
        }
        must(statuses.every((s) => s === 202), `service_role statuses ${JSON.stringify(statuses)}`);
        await waitFor(() => broadcastsOn(phx, `realtime:${topic}`).length >= 10, 5000, 'the 10 service_role messages');
        return `anon got ${limited}×429; service_role 10×202, all delivered`;
      });
    },
  },
  {
    name: 'ws-too-many-channels',
    server: 'small',
    short: true,
    expect: 'the 6th channel on one socket (max_channels_per_connection 5) gets ChannelRateLimitReached: Too many channels',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        for (let i = 0; i < 5; i++) must((await phx.join(`realtime:${uniq('ch')}`)).status === 'ok', `join ${i + 1} refused`);
        const r = reasonOf(await phx.join(`realtime:${uniq('ch')}`));
        must(r === 'ChannelRateLimitReached: Too many channels', `6th join: ${r}`);
        must(await phx.heartbeat(), 'socket unusable');
        return r;
      }),
  },
  {
    name: 'ws-max-connections',
    server: 'small',
    short: true,
    expect: 'past max_connections (20, canary included) the handshake and /sse get 429 Too many connected users; a slot freed is usable again',
    run: async ({ srv }) => {
      const held = [];
      try {
        const start = await connections(srv);
        for (let i = start; i < 20; i++) held.push(await Phx.open(srv, anon(srv)));
        const r = await Phx.refusal(srv, anon(srv));
        must(r.status === 429 && r.body.includes('Too many connected users'), `21st: ${JSON.stringify(r)}`);
        const s = await sse(srv, `topic=${uniq('full')}&apikey=${anon(srv)}`);
        s.close();
        must(s.status === 429 && s.text().includes('Too many connected users'), `SSE when full: ${s.status} ${s.text()}`);
        held.pop().close();
        const again = await waitFor(async () => {
          const x = await Phx.refusal(srv, anon(srv));
          return x.opened ? x : null;
        }, 5000, 'a freed slot');
        must(again.opened, 'no slot after closing one');
        return `WS 429, SSE 429 at ${20} connections; reopened after freeing one`;
      } finally {
        held.forEach((p) => p.close());
      }
    },
  },
  {
    name: 'many-connections-one-ip',
    server: 'dev',
    short: true,
    expect: '500 WebSockets from one address (under max_connections_per_ip 1000 and max_connections) all open; /healthz counts them and back',
    run: async ({ srv }) => {
      const before = await connections(srv);
      const socks = await openMany(srv, 500, { localAddress: '127.0.0.21' });
      try {
        const during = await connections(srv);
        must(during >= before + 500, `healthz connections ${before} → ${during}`);
        must(await socks[499].heartbeat(), 'the last socket does not answer');
      } finally {
        socks.forEach((s) => s.close());
      }
      const after = await waitFor(async () => ((await connections(srv)) <= before ? connections(srv) : null), 10_000, 'connections to drop back');
      return `500 open (healthz ${before} → ${before + 500} → ${after})`;
    },
  },
  {
    name: 'ws-idle-timeout',
    server: 'small',
    short: true,
    expect: 'a socket that sends nothing after the handshake is closed with 4000 after idle_timeout_secs (3 s)',
    run: async ({ srv }) => {
      const phx = await Phx.open(srv, anon(srv));
      try {
        const t0 = Date.now();
        const c = await phx.waitClose(10_000, 'idle close');
        const ms = Date.now() - t0;
        must(c.code === 4000 && ms >= 2500, `closed with ${c.code} after ${ms} ms`);
        return `close 4000 after ${ms} ms`;
      } finally {
        phx.close();
      }
    },
  },
  {
    name: 'ws-never-reads',
    server: 'dev',
    short: true,
    expect: 'a subscriber that never reads while 3000 messages of 5 KB flow to it is closed as a slow consumer (4008 once it reads again); every publish is accepted',
    timeout: 45_000,
    run: async ({ srv }) => {
      const topic = uniq('slow');
      const phx = await Phx.open(srv, anon(srv));
      try {
        await phx.join(`realtime:${topic}`);
        phx.ws._socket.pause();
        const statuses = [];
        for (let i = 0; i < 60; i++) {
          const r = await publish(srv, Array.from({ length: 50 }, (_, k) => ({ topic, event: 'bulk', payload: { k, pad: 'p'.repeat(5000) } })));
          statuses.push(r.status);
        }
        must(statuses.every((s) => s === 202), `publish statuses ${JSON.stringify([...new Set(statuses)])}`);
        phx.ws._socket.resume();
        const c = await phx.waitClose(15_000, 'the slow consumer to be closed');
        must(c.code === 4008, `closed with ${c.code}`);
        return `closed ${c.code} after ${broadcastsOn(phx, `realtime:${topic}`).length} of 3000 messages; 60 publishes 202`;
      } finally {
        phx.close();
      }
    },
  },
  {
    name: 'presence-track-oversize',
    server: 'dev',
    expect: 'tracking a 20 KB presence state (over max_presence_payload_bytes 16 KiB): system "Track message size exceeded", then phx_close',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('pres')}`;
        await phx.join(topic, { presence: { enabled: true, key: 'me' } });
        phx.send(topic, 'presence', { type: 'presence', event: 'track', payload: { blob: 'x'.repeat(20_000) } }, { joinRef: phx.joinRefs[topic] });
        const sys = await phx.expect((f) => f.topic === topic && f.event === 'system', 5000, 'presence size error');
        must(sys.payload?.message === 'Track message size exceeded', `system ${JSON.stringify(sys.payload)}`);
        await phx.expect((f) => f.topic === topic && f.event === 'phx_close', 5000, 'phx_close');
        return sys.payload.message;
      }),
  },
  {
    name: 'presence-members-cap',
    server: 'small',
    expect: 'a 4th member tracking presence in one channel (max_presence_members 3): system "Too many presence members in this channel", then phx_close; the 3 others stay',
    run: async ({ srv }) => {
      const topic = `realtime:${uniq('members')}`;
      const socks = [];
      try {
        for (let i = 0; i < 4; i++) {
          const phx = await Phx.open(srv, anon(srv));
          socks.push(phx);
          await phx.join(topic, { presence: { enabled: true, key: `m${i}` } });
          const ref = phx.send(topic, 'presence', { type: 'presence', event: 'track', payload: { i } }, { joinRef: phx.joinRefs[topic] });
          if (i < 3) must((await phx.reply(ref)).status === 'ok', `track ${i + 1} refused`);
        }
        const sys = await socks[3].expect((f) => f.topic === topic && f.event === 'system', 5000, 'presence members error');
        must(sys.payload?.message === 'Too many presence members in this channel', `system ${JSON.stringify(sys.payload)}`);
        await socks[3].expect((f) => f.topic === topic && f.event === 'phx_close', 5000, 'phx_close');
        must(!socks.slice(0, 3).some((p) => p.frames.some((f) => f.topic === topic && f.event === 'phx_close')), 'an earlier member was closed');
        return sys.payload.message;
      } finally {
        socks.forEach((p) => p.close());
      }
    },
  },
  {
    name: 'presence-call-flood',
    server: 'dev',
    expect: '60 presence track calls in one burst (presence_calls_per_window 50): system "Client presence rate limit exceeded", then phx_close',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('presflood')}`;
        await phx.join(topic, { presence: { enabled: true, key: 'me' } });
        for (let i = 0; i < 60; i++) phx.send(topic, 'presence', { type: 'presence', event: 'track', payload: { i } }, { joinRef: phx.joinRefs[topic] });
        const sys = await phx.expect((f) => f.topic === topic && f.event === 'system', 5000, 'presence rate error');
        must(sys.payload?.message === 'Client presence rate limit exceeded', `system ${JSON.stringify(sys.payload)}`);
        await phx.expect((f) => f.topic === topic && f.event === 'phx_close', 5000, 'phx_close');
        return sys.payload.message;
      }),
  },
  {
    name: 'idempotency-replay-ws',
    server: 'dev',
    short: true,
    expect: 'the same meta.idempotency_key pushed twice is acknowledged twice and delivered once',
    run: async ({ srv }) => {
      const topic = `realtime:${uniq('idem')}`;
      const sub = await Phx.open(srv, anon(srv));
      try {
        await sub.join(topic);
        return await withSocket(srv, async (phx) => {
          await phx.join(topic, { broadcast: { self: false, ack: true } });
          const key = uniq('key');
          const a = await phx.reply(phx.broadcast(topic, 'once', { n: 1 }, { idempotency_key: key }));
          const b = await phx.reply(phx.broadcast(topic, 'once', { n: 2 }, { idempotency_key: key }));
          must(a.status === 'ok' && b.status === 'ok', `acks ${JSON.stringify([a, b])}`);
          must((await phx.reply(phx.broadcast(topic, 'marker', {}))).status === 'ok', 'marker');
          await sub.expect((f) => f.payload?.event === 'marker', 5000, 'marker');
          const got = broadcastsOn(sub, topic).filter((m) => m.event === 'once');
          must(got.length === 1 && got[0].payload.n === 1, `delivered ${JSON.stringify(got.map((m) => m.payload))}`);
          return 'acked twice, delivered once';
        });
      } finally {
        sub.close();
      }
    },
  },
  {
    name: 'idempotency-replay-http',
    server: 'dev',
    short: true,
    expect: 'the same idempotency key twice on the batch route and on the single route (Idempotency-Key) → 202 each time, one delivery each',
    run: async ({ srv }) => {
      const topic = uniq('idem-http');
      return withSocket(srv, async (phx) => {
        await phx.join(`realtime:${topic}`);
        const key = uniq('k');
        for (let i = 0; i < 2; i++) {
          const r = await publish(srv, [{ topic, event: 'batch-once', payload: { i }, idempotency_key: key }]);
          must(r.status === 202, `batch ${i}: ${brief(r)}`);
          const s = await http(srv, `/api/broadcast/${topic}/events/single-once`, {
            method: 'POST',
            headers: { authorization: `Bearer ${service(srv)}`, 'content-type': 'application/json', 'idempotency-key': `${key}-s` },
            body: JSON.stringify({ i }),
          });
          must(s.status === 202, `single ${i}: ${brief(s)}`);
        }
        must((await publish(srv, [{ topic, event: 'marker', payload: {} }])).status === 202, 'marker');
        await phx.expect((f) => f.payload?.event === 'marker', 5000, 'marker');
        // The single route delivers binary (kind 4) to 2.0.0 sockets: count frames naming the event.
        const batchOnce = broadcastsOn(phx, `realtime:${topic}`).filter((m) => m.event === 'batch-once').length;
        const singleOnce = phx.frames.filter((f) => f.binary?.includes(Buffer.from('single-once'))).length;
        must(batchOnce === 1 && singleOnce === 1, `deliveries: batch ${batchOnce}, single ${singleOnce}`);
        return '202 ×4, one delivery per key';
      });
    },
  },
  {
    name: 'postgres-changes-huge-in-filter',
    server: 'dev',
    short: true,
    expect: 'a postgres_changes binding with a 50000-value in filter, on a server without a database: join ok echoing it, then system error "Postgres Changes are not configured..."; socket open',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('pg')}`;
        const filter = `id=in.(${Array.from({ length: 50_000 }, (_, i) => i).join(',')})`;
        const r = await phx.join(topic, { postgres_changes: [{ event: '*', schema: 'public', table: 'todos', filter }] }, { ms: 10_000 });
        must(r.status === 'ok' && r.response?.postgres_changes?.[0]?.filter === filter, `join ${clip(JSON.stringify(r))}`);
        const sys = await phx.expect((f) => f.topic === topic && f.event === 'system', 5000, 'postgres_changes system error');
        must(sys.payload?.status === 'error' && /not configured/.test(sys.payload?.message), `system ${clip(JSON.stringify(sys.payload))}`);
        must(await phx.heartbeat(), 'socket unusable');
        return `ok reply, system "${clip(sys.payload.message, 60)}"`;
      }),
  },
  {
    name: 'postgres-changes-many-bindings',
    server: 'dev',
    expect: '10000 postgres_changes bindings in one join: a clear reply (ok echoing them, then the system error), no crash',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('pgmany')}`;
        const bindings = Array.from({ length: 10_000 }, (_, i) => ({ event: 'INSERT', schema: 'public', table: `t${i}`, filter: `id=eq.${i}` }));
        const r = await phx.join(topic, { postgres_changes: bindings }, { ms: 15_000 });
        must(r.status === 'ok' && r.response?.postgres_changes?.length === 10_000, `join ${clip(JSON.stringify(r))}`);
        const sys = await phx.expect((f) => f.topic === topic && f.event === 'system', 5000, 'postgres_changes system error');
        must(sys.payload?.status === 'error', `system ${clip(JSON.stringify(sys.payload))}`);
        return 'ok with 10000 bindings echoed, system error';
      }),
  },
];
