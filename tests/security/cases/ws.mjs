// WebSocket: malformed, oversized and protocol-breaking frames; unknown topics and events; name and
// key lengths on join and push.
import { aliveAndSilent, anon, arrayDepth, clip, must, reasonOf, uniq, withSocket } from '../lib/check.mjs';
import { rawWebSocket } from '../lib/net.mjs';
import { broadcastsOn, Phx } from '../lib/phoenix.mjs';

const MIB = 1024 * 1024;

/** Sends `frames` on a fresh socket and checks they are ignored. */
const ignored = (frames, opts = {}) => async ({ srv }) =>
  withSocket(
    srv,
    async (phx) => {
      const before = phx.frames.length;
      for (const f of frames) phx.sendRaw(f);
      return aliveAndSilent(phx, before);
    },
    opts,
  );

/** Opens a raw socket, writes `frame`, and expects close `code` within 5 s. */
const closesWith = (code, frame, { server } = {}) => async ({ srv, servers }) => {
  const target = server ? servers[server] : srv;
  const conn = await rawWebSocket(target, anon(target));
  try {
    await conn.write(typeof frame === 'function' ? frame() : frame);
    const r = await conn.waitCloseCode(5000);
    return must(r.code === code, `close code ${r.code ?? 'none'}${r.closed ? ', TCP closed' : ', still open'} after ${r.ms} ms`)
      && `close ${r.code} after ${r.ms} ms`;
  } finally {
    conn.destroy();
  }
};

/** Kind-3 binary push header: lengths as given, whatever follows. */
function kind3({ joinRef = '1', ref = '2', topic, event, meta = '', payload = '{}' }, lie = {}) {
  const parts = [joinRef, ref, topic, event, meta].map((s) => Buffer.from(s));
  const header = Buffer.from([3, ...parts.map((p, i) => lie[i] ?? p.length), 0]);
  return Buffer.concat([header, ...parts, Buffer.from(payload)]);
}

const nested = (depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`;

export default [
  {
    name: 'ws-text-not-json',
    server: 'dev',
    short: true,
    expect: 'text frames that are not JSON are ignored: no reply, socket stays open',
    run: ignored(['not json{{', '', '\u0000\u0001', '{"unterminated": [1,2', '💥'.repeat(1000)]),
  },
  {
    name: 'ws-wrong-arity',
    server: 'dev',
    short: true,
    expect: 'Phoenix arrays with fewer than five elements are ignored: no reply, socket stays open',
    run: ignored([[], [null], [null, '1', 'phoenix', 'heartbeat'], '[null,"1","phoenix"]']),
  },
  {
    name: 'ws-wrong-types',
    server: 'dev',
    expect: 'five-element frames with wrong types (numbers, objects, an object frame on 2.0.0) are ignored',
    run: ignored([[1, 2, 3, 4, 5], [null, {}, [], 'heartbeat', {}], [null, '1', 'realtime:x', 7, {}], { topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '9' }, 'null', '42']),
  },
  {
    name: 'ws-v1-garbage',
    server: 'dev',
    expect: 'on a 1.0.0 socket, arrays, scalars and objects of wrong types are ignored',
    run: ignored([[null, '1', 'phoenix', 'heartbeat', {}], '"str"', 'null', { topic: 5, event: [], payload: 1, ref: {} }, {}], { vsn: '1.0.0' }),
  },
  {
    name: 'ws-binary-unknown-kind',
    server: 'dev',
    short: true,
    expect: 'binary frames of unknown kinds (0, 4, 9, 255, empty) are ignored, socket stays open',
    run: ignored([Buffer.alloc(0), Buffer.from([0, 1, 2]), Buffer.from([4, 0, 0, 0, 0]), Buffer.from([9, 9, 9]), Buffer.alloc(300, 255)]),
  },
  {
    name: 'ws-binary-lying-header',
    server: 'dev',
    short: true,
    expect: 'a kind-3 frame whose lengths point past its end is ignored, socket stays open',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('lie')}`;
        await phx.join(topic);
        const before = phx.frames.length;
        phx.sendRaw(kind3({ topic, event: 'e' }, { 2: 250, 3: 250, 4: 250 }));
        phx.sendRaw(Buffer.from([3, 255, 255, 255, 255, 255, 0]));
        phx.sendRaw(Buffer.from([3, 1]));
        return aliveAndSilent(phx, before);
      }),
  },
  {
    name: 'ws-binary-on-v1',
    server: 'dev',
    expect: 'a binary frame on a 1.0.0 socket is ignored, socket stays open',
    run: ignored([Buffer.from([3, 1, 1, 10, 1, 0, 0, 49, 50]), Buffer.alloc(1000, 3)], { vsn: '1.0.0' }),
  },
  {
    name: 'ws-frame-over-max-frame-bytes',
    server: 'dev',
    short: true,
    expect: 'a 1 MiB + 1 byte text message (over max_frame_bytes) closes the socket with 1009',
    run: async ({ srv }) => {
      const phx = await Phx.open(srv, anon(srv));
      try {
        phx.sendRaw('x'.repeat(MIB + 1));
        const c = await phx.waitClose(10_000, 'close after an oversized frame');
        return must(c.code === 1009, `closed with ${c.code} ${c.reason}`) && `close ${c.code} (${c.reason})`;
      } finally {
        phx.close();
      }
    },
  },
  {
    name: 'ws-frame-header-claims-8-EiB',
    server: 'dev',
    short: true,
    expect: 'a frame header announcing 2^63-1 bytes closes the socket with 1009 at once (nothing is allocated)',
    run: closesWith(1009, () => Buffer.concat([Buffer.from([0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Buffer.alloc(4)])),
  },
  {
    name: 'ws-fragments-over-max-frame-bytes',
    server: 'small',
    expect: 'a message of 20 continuation fragments of 4 KiB (80 KiB > max_frame_bytes 64 KiB) closes with 1009',
    run: async ({ srv }) => {
      const conn = await rawWebSocket(srv, anon(srv));
      try {
        const frag = Buffer.alloc(4096, 0x61);
        const frames = [];
        for (let i = 0; i < 20; i++) frames.push(conn.sendFrame(i === 0 ? 1 : 0, frag, { fin: false }));
        await Promise.all(frames);
        const r = await conn.waitCloseCode(5000);
        return must(r.code === 1009, `close code ${r.code ?? 'none'}, TCP closed: ${r.closed}`) && `close ${r.code} after ${r.ms} ms`;
      } finally {
        conn.destroy();
      }
    },
  },
  {
    name: 'ws-invalid-utf8',
    server: 'dev',
    short: true,
    expect: 'a text frame with invalid UTF-8 (0xff 0xfe, a lone surrogate) closes the socket with 1007',
    run: closesWith(1007, () => Buffer.concat([
      Buffer.from([0x81, 0x80 | 9]),
      Buffer.alloc(4),
      Buffer.from([0x5b, 0x22, 0xff, 0xfe, 0xed, 0xa0, 0x80, 0x22, 0x5d]),
    ])),
  },
  {
    name: 'ws-unmasked-client-frame',
    server: 'dev',
    expect: 'an unmasked client frame is a protocol error: close 1002',
    run: async (ctx) => {
      const conn = await rawWebSocket(ctx.srv, anon(ctx.srv));
      try {
        await conn.sendFrame(1, '[null,"1","phoenix","heartbeat",{}]', { mask: false });
        const r = await conn.waitCloseCode(5000);
        return must(r.code === 1002, `close code ${r.code ?? 'none'}, TCP closed: ${r.closed}`) && `close ${r.code}`;
      } finally {
        conn.destroy();
      }
    },
  },
  {
    name: 'ws-reserved-bits-and-opcodes',
    server: 'dev',
    expect: 'RSV bits without an extension, and reserved opcode 3, are protocol errors: close 1002',
    run: async ({ srv }) => {
      const seen = [];
      for (const [opcode, rsv] of [[1, 4], [3, 0]]) {
        const conn = await rawWebSocket(srv, anon(srv));
        try {
          await conn.sendFrame(opcode, 'hello', { rsv });
          const r = await conn.waitCloseCode(5000);
          must(r.code === 1002, `opcode ${opcode} rsv ${rsv}: close code ${r.code ?? 'none'}`);
          seen.push(`opcode ${opcode}/rsv ${rsv} → ${r.code}`);
        } finally {
          conn.destroy();
        }
      }
      return seen.join(', ');
    },
  },
  {
    name: 'ws-oversized-ping',
    server: 'dev',
    expect: 'a ping with a 200-byte payload (control frames carry at most 125) closes with 1002',
    run: async ({ srv }) => {
      const conn = await rawWebSocket(srv, anon(srv));
      try {
        await conn.sendFrame(9, Buffer.alloc(200, 1));
        const r = await conn.waitCloseCode(5000);
        return must(r.code === 1002, `close code ${r.code ?? 'none'}, TCP closed: ${r.closed}`) && `close ${r.code}`;
      } finally {
        conn.destroy();
      }
    },
  },
  {
    name: 'ws-ping-flood',
    server: 'dev',
    short: true,
    expect: '5000 pings in one burst are each answered with a pong; the socket stays usable',
    run: async ({ srv }) => {
      const conn = await rawWebSocket(srv, anon(srv));
      try {
        const ping = Buffer.concat(Array.from({ length: 5000 }, (_, i) => Buffer.from(pingFrame(i))));
        await conn.write(ping);
        const pongs = () => conn.serverFrames().frames.filter((f) => f.opcode === 10).length;
        const ok = await conn.until(() => pongs() >= 5000, 15_000);
        must(ok, `${pongs()} pongs of 5000 (closed: ${conn.closed})`);
        await conn.sendFrame(1, '[null,"hb","phoenix","heartbeat",{}]');
        const replied = await conn.until((c) => c.frameBytes().includes('"hb"'), 5000);
        return must(replied, 'heartbeat after the flood not answered') && `${pongs()} pongs, heartbeat answered`;
      } finally {
        conn.destroy();
      }
    },
  },
  {
    name: 'ws-payload-over-max-payload-bytes',
    server: 'dev',
    short: true,
    expect: 'a broadcast push with a 300 KB payload (over max_payload_bytes, under max_frame_bytes) gets the error reply payload_size_exceeded; socket stays open',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('big')}`;
        await phx.join(topic);
        const ref = phx.broadcast(topic, 'big', { blob: 'x'.repeat(300_000) });
        const r = await phx.reply(ref);
        must(r.status === 'error' && r.response?.reason === 'payload_size_exceeded', `reply ${clip(JSON.stringify(r))}`);
        must(await phx.heartbeat(), 'heartbeat after the refusal not answered');
        return `error reply ${r.response.reason}, socket open`;
      }),
  },
  {
    name: 'ws-deep-json-nesting',
    server: 'dev',
    short: true,
    expect: 'a payload nesting 100000 arrays (200 KB) is either refused with an error reply or acknowledged and delivered byte-identical to 1.0.0 and 2.0.0 subscribers; no stall, sockets stay open',
    run: async ({ srv }) => {
      const topic = `realtime:${uniq('deep')}`;
      const deep = nested(100_000);
      const subs = [await Phx.open(srv, anon(srv), { vsn: '1.0.0' }), await Phx.open(srv, anon(srv))];
      try {
        for (const s of subs) await s.join(topic);
        return await withSocket(srv, async (phx) => {
          await phx.join(topic, { broadcast: { self: false, ack: true } });
          phx.sendRaw(`[null,"77","${topic}","broadcast",{"type":"broadcast","event":"deep","payload":${deep}}]`);
          const r = await phx.reply('77', 10_000);
          const marker = await phx.reply(phx.broadcast(topic, 'marker', {}));
          must(marker.status === 'ok', `marker ${JSON.stringify(marker)}`);
          for (const s of subs) {
            await s.expect((f) => f.payload?.event === 'marker', 5000, `marker on ${s.vsn}`);
            const got = s.frames.filter((f) => f.unparsable || f.payload?.event === 'deep');
            if (r.status === 'ok') {
              must(got.length === 1 && arrayDepth(got[0].payload.payload) === 100_000, `${s.vsn}: ${got.length} deep deliveries, intact ${got[0] && arrayDepth(got[0].payload?.payload) === 100_000}`);
            } else {
              must(got.length === 0, `${s.vsn}: refused but delivered`);
            }
          }
          must(await phx.heartbeat(), 'publisher socket unusable');
          return r.status === 'ok' ? 'acknowledged; delivered intact to 1.0.0 and 2.0.0' : `refused: ${JSON.stringify(r.response)}`;
        });
      } finally {
        subs.forEach((s) => s.close());
      }
    },
  },
  {
    name: 'ws-huge-array-frame',
    server: 'dev',
    expect: 'a heartbeat frame with 200000 extra elements (900 KB) is answered (extras ignored); nothing else happens',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        phx.sendRaw(`[null,"h1","phoenix","heartbeat",{}${',0'.repeat(200_000)}]`);
        const r = await phx.reply('h1', 10_000);
        return must(r?.status === 'ok', `reply ${JSON.stringify(r)}`) && 'heartbeat answered ok';
      }),
  },
  {
    name: 'ws-huge-array-payload',
    server: 'dev',
    expect: 'a 100000-element array payload (200 KB, under the limits) is acknowledged and delivered intact to another subscriber',
    run: async ({ srv }) => {
      const topic = `realtime:${uniq('array')}`;
      const sub = await Phx.open(srv, anon(srv));
      try {
        await sub.join(topic);
        return await withSocket(srv, async (phx) => {
          await phx.join(topic, { broadcast: { self: false, ack: true } });
          const arr = Array.from({ length: 100_000 }, (_, i) => i % 10);
          const r = await phx.reply(phx.broadcast(topic, 'arr', arr), 10_000);
          must(r.status === 'ok', `ack ${clip(JSON.stringify(r))}`);
          const got = await sub.expect((f) => f.topic === topic && f.payload?.event === 'arr', 10_000, 'the array broadcast');
          must(Array.isArray(got.payload.payload) && got.payload.payload.length === 100_000, 'delivered array differs');
          return 'acknowledged, delivered with 100000 elements';
        });
      } finally {
        sub.close();
      }
    },
  },
  {
    name: 'ws-unmatched-topic',
    server: 'dev',
    short: true,
    expect: 'a join of a topic without the realtime: prefix gets the error reply "unmatched topic"',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const reasons = [];
        for (const topic of ['room1', 'phoenix:x', 'REALTIME:x', '']) reasons.push(reasonOf(await phx.join(topic)));
        must(reasons.every((r) => r === 'unmatched topic'), `reasons ${JSON.stringify(reasons)}`);
        return `4 joins: unmatched topic`;
      }),
  },
  {
    name: 'ws-topic-name-required',
    server: 'dev',
    expect: 'a join of "realtime:" gets TopicNameRequired: You must provide a topic name',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const r = reasonOf(await phx.join('realtime:'));
        return must(r === 'TopicNameRequired: You must provide a topic name', `reason ${r}`);
      }),
  },
  {
    name: 'ws-push-to-unjoined-topic',
    server: 'dev',
    short: true,
    expect: 'a broadcast, presence or access_token push to a topic not joined gets "unmatched topic"',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('unjoined')}`;
        const refs = [
          phx.broadcast(topic, 'e', {}),
          phx.send(topic, 'presence', { type: 'presence', event: 'track', payload: {} }),
          phx.send(topic, 'whatever', {}),
        ];
        const reasons = [];
        for (const ref of refs) reasons.push((await phx.reply(ref)).response?.reason);
        must(reasons.every((r) => r === 'unmatched topic'), `reasons ${JSON.stringify(reasons)}`);
        return '3 pushes: unmatched topic';
      }),
  },
  {
    name: 'ws-unknown-event',
    server: 'dev',
    short: true,
    expect: 'an unknown event on a joined topic gets "unknown event: <event>"; on the phoenix topic "unknown event"',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('evt')}`;
        await phx.join(topic);
        const r1 = await phx.reply(phx.send(topic, 'drop_table', {}, { joinRef: phx.joinRefs[topic] }));
        const r2 = await phx.reply(phx.send('phoenix', 'shutdown', {}));
        must(r1.response?.reason === 'unknown event: drop_table', `joined topic: ${JSON.stringify(r1)}`);
        must(r2.status === 'error' && r2.response?.reason === 'unknown event', `phoenix topic: ${JSON.stringify(r2)}`);
        return `"${r1.response.reason}", "${r2.response.reason}"`;
      }),
  },
  {
    name: 'ws-topic-too-long',
    server: 'dev',
    short: true,
    expect: 'a 247-byte channel name gets "TopicTooLong: topic is 247 bytes long; the limit is 246 bytes"; 246 bytes joins',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const r = reasonOf(await phx.join(`realtime:${'t'.repeat(247)}`));
        must(r === 'TopicTooLong: topic is 247 bytes long; the limit is 246 bytes', `247 bytes: ${r}`);
        const ok = await phx.join(`realtime:${'t'.repeat(246)}`);
        must(ok.status === 'ok', `246 bytes refused: ${JSON.stringify(ok)}`);
        const multi = reasonOf(await phx.join(`realtime:${'é'.repeat(124)}`));
        must(multi?.startsWith('TopicTooLong: topic is 248 bytes'), `124 two-byte characters: ${multi}`);
        return `${r}; 246 ok; bytes, not characters, counted`;
      }),
  },
  {
    name: 'ws-event-too-long',
    server: 'dev',
    short: true,
    expect: 'a push with a 256-byte event gets "event is 256 bytes long; the limit is 255 bytes"; nothing delivered',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('evlen')}`;
        await phx.join(topic, { broadcast: { self: true, ack: true } });
        const r = await phx.reply(phx.broadcast(topic, 'e'.repeat(256), {}));
        must(r.status === 'error' && r.response?.reason === 'event is 256 bytes long; the limit is 255 bytes', `reply ${JSON.stringify(r)}`);
        const ok = await phx.reply(phx.broadcast(topic, 'e'.repeat(255), {}));
        must(ok.status === 'ok', `255 bytes refused: ${JSON.stringify(ok)}`);
        await phx.expect((f) => f.payload?.event === 'e'.repeat(255), 5000, 'the 255-byte event');
        must(!broadcastsOn(phx, topic).some((b) => b.event.length === 256), 'the 256-byte event was delivered');
        return r.response.reason;
      }),
  },
  {
    name: 'ws-idempotency-key-too-long',
    server: 'dev',
    expect: 'a push whose meta.idempotency_key is 256 bytes gets an error reply naming idempotency_key',
    run: async ({ srv }) =>
      withSocket(srv, async (phx) => {
        const topic = `realtime:${uniq('idlen')}`;
        await phx.join(topic, { broadcast: { self: true, ack: true } });
        const r = await phx.reply(phx.broadcast(topic, 'e', {}, { idempotency_key: 'k'.repeat(256) }));
        must(r.status === 'error' && String(r.response?.reason).startsWith('idempotency_key is 256 bytes long'), `reply ${JSON.stringify(r)}`);
        return r.response.reason;
      }),
  },
  {
    name: 'ws-handshake-refusals',
    server: 'dev',
    short: true,
    expect: 'vsn=3.0.0 → 400 Unsupported serializer version; no apikey → 401 API key is missing; empty apikey → 401',
    run: async ({ srv }) => {
      const bad = await Phx.refusal(srv, anon(srv), { vsn: '3.0.0' });
      must(bad.status === 400 && bad.body.includes('Unsupported serializer version'), `vsn 3.0.0: ${JSON.stringify(bad)}`);
      const none = await Phx.refusal(srv, undefined);
      must(none.status === 401 && none.body.includes('API key is missing'), `no apikey: ${JSON.stringify(none)}`);
      const empty = await Phx.refusal(srv, '');
      must(empty.status === 401, `empty apikey: ${JSON.stringify(empty)}`);
      return '400, 401, 401';
    },
  },
];

/** A masked ping frame carrying the number `i`. */
function pingFrame(i) {
  const payload = Buffer.from(String(i));
  return Buffer.concat([Buffer.from([0x89, 0x80 | payload.length]), Buffer.alloc(4), payload]);
}
