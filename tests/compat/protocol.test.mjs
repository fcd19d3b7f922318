// Wire-level Phoenix protocol checks with a raw WebSocket (no realtime-js), for the cases the
// client relies on but cannot show directly: heartbeat replies, replies for unjoined topics,
// phx_close to the old join on a duplicate join, and tolerance of malformed frames.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { uniqueTopic } from './lib/client.mjs';
import { startHerald } from './lib/herald.mjs';
import { RawSocket } from './lib/raw.mjs';
import { anonToken } from './lib/tokens.mjs';

let server;
const sockets = [];
before(async () => {
  server = await startHerald();
});
afterEach(() => {
  for (const s of sockets.splice(0)) s.close();
});
after(async () => server?.stop());

/** A raw socket speaking `vsn`; frame(joinRef, ref, topic, event, payload) builds its frames. */
async function open(vsn) {
  const raw = await RawSocket.open(`ws://127.0.0.1:${server.port}/socket/websocket?apikey=${anonToken()}&vsn=${vsn}`);
  sockets.push(raw);
  raw.frame = (join_ref, ref, topic, event, payload) =>
    vsn === '2.0.0'
      ? [join_ref, ref, topic, event, payload]
      : { topic, event, payload, ref, ...(join_ref === null ? {} : { join_ref }) };
  return raw;
}

const JOIN_CONFIG = {
  config: {
    broadcast: { self: false, ack: false },
    presence: { key: '', enabled: false },
    postgres_changes: [],
    private: false,
  },
};

for (const vsn of ['1.0.0', '2.0.0']) {
  describe(`raw protocol on vsn ${vsn}`, () => {
    test('heartbeat gets phx_reply ok with the same ref', async () => {
      const raw = await open(vsn);
      raw.send(raw.frame(null, 'hb-1', 'phoenix', 'heartbeat', {}));
      const reply = await raw.expect((m) => m.ref === 'hb-1', 3000, 'heartbeat reply');
      assert.equal(reply.topic, 'phoenix');
      assert.equal(reply.event, 'phx_reply');
      assert.deepEqual(reply.payload, { status: 'ok', response: {} });
    });

    test('join reply echoes refs and always carries postgres_changes', async () => {
      const raw = await open(vsn);
      const topic = `realtime:${uniqueTopic()}`;
      raw.send(raw.frame('7', '7', topic, 'phx_join', JOIN_CONFIG));
      const reply = await raw.expect((m) => m.ref === '7', 3000, 'join reply');
      assert.equal(reply.event, 'phx_reply');
      assert.equal(reply.topic, topic);
      assert.equal(reply.payload.status, 'ok', JSON.stringify(reply.payload));
      assert.deepEqual(reply.payload.response.postgres_changes, []);
      if (vsn === '2.0.0') assert.equal(reply.join_ref, '7');
    });

    test('a push to a topic that is not joined gets "unmatched topic"', async () => {
      const raw = await open(vsn);
      const topic = `realtime:${uniqueTopic()}`;
      raw.send(raw.frame('3', '4', topic, 'broadcast', { type: 'broadcast', event: 'x', payload: {} }));
      const reply = await raw.expect((m) => m.ref === '4', 3000, 'reply to the stray push');
      assert.equal(reply.event, 'phx_reply');
      assert.deepEqual(reply.payload, { status: 'error', response: { reason: 'unmatched topic' } });
    });

    test('leaving a topic that is not joined gets ok', async () => {
      const raw = await open(vsn);
      const topic = `realtime:${uniqueTopic()}`;
      raw.send(raw.frame('5', '5', topic, 'phx_leave', {}));
      const reply = await raw.expect((m) => m.ref === '5' && m.event === 'phx_reply', 3000, 'leave reply');
      assert.equal(reply.payload.status, 'ok');
    });

    test('joining an already joined topic closes the old join first', async () => {
      const raw = await open(vsn);
      const topic = `realtime:${uniqueTopic()}`;
      raw.send(raw.frame('1', '1', topic, 'phx_join', JOIN_CONFIG));
      await raw.expect((m) => m.ref === '1' && m.event === 'phx_reply', 3000, 'first join reply');
      raw.send(raw.frame('2', '2', topic, 'phx_join', JOIN_CONFIG));
      const close = await raw.expect((m) => m.event === 'phx_close' && m.topic === topic, 3000, 'phx_close for the old join');
      const second = await raw.expect((m) => m.ref === '2' && m.event === 'phx_reply', 3000, 'second join reply');
      assert.equal(close.ref, '1', 'phx_close carries the old join_ref as ref');
      if (vsn === '2.0.0') assert.equal(close.join_ref, '1');
      assert.equal(second.payload.status, 'ok');
      const inbox = raw.inbox.items;
      assert.ok(inbox.indexOf(close) < inbox.indexOf(second), 'phx_close precedes the new join reply');
    });

    test('a text broadcast push with ack reaches the other member once', async () => {
      const a = await open(vsn);
      const b = await open(vsn);
      const topic = `realtime:${uniqueTopic()}`;
      const ackConfig = { config: { ...JOIN_CONFIG.config, broadcast: { self: false, ack: true } } };
      a.send(a.frame('1', '1', topic, 'phx_join', ackConfig));
      b.send(b.frame('1', '1', topic, 'phx_join', JOIN_CONFIG));
      await a.expect((m) => m.ref === '1', 3000, 'join reply a');
      await b.expect((m) => m.ref === '1', 3000, 'join reply b');
      const msg = { type: 'broadcast', event: 'raw', payload: { n: 1 } };
      a.send(a.frame('1', '2', topic, 'broadcast', msg));
      const ack = await a.expect((m) => m.ref === '2', 3000, 'broadcast ack');
      // The ack says where the message was stored (an extension existing clients ignore).
      assert.equal(ack.payload.status, 'ok');
      assert.equal(ack.payload.response.offset, 1);
      assert.equal(typeof ack.payload.response.epoch, 'string');
      const got = await b.expect((m) => m.event === 'broadcast', 3000, 'broadcast at b');
      assert.equal(got.topic, topic);
      assert.equal(got.ref, null);
      assert.equal(got.payload.type, 'broadcast');
      assert.equal(got.payload.event, 'raw');
      assert.deepEqual(got.payload.payload, { n: 1 });
    });
  });
}

describe('raw protocol, vsn 2.0.0 specifics', () => {
  test('malformed frames are ignored and the connection stays usable', async () => {
    const raw = await open('2.0.0');
    raw.send('["only", "three", "elements"]');
    raw.send('{"not":"an array"}');
    raw.send('not json at all');
    raw.send([null, 'hb-after', 'phoenix', 'heartbeat', {}, 'extra element']);
    const reply = await raw.expect((m) => m.ref === 'hb-after', 3000, 'heartbeat reply after malformed frames');
    assert.deepEqual(reply.payload, { status: 'ok', response: {} });
    assert.equal(raw.closed, null, 'connection still open');
  });

  test('a kind 3 binary push is delivered as kind 4 with the same bytes', async () => {
    const a = await open('2.0.0');
    const b = await open('2.0.0');
    const topic = `realtime:${uniqueTopic()}`;
    a.send(['1', '1', topic, 'phx_join', JOIN_CONFIG]);
    b.send(['1', '1', topic, 'phx_join', JOIN_CONFIG]);
    await a.expect((m) => m.ref === '1', 3000, 'join reply a');
    await b.expect((m) => m.ref === '1', 3000, 'join reply b');

    const enc = new TextEncoder();
    const [jr, ref, top, ev] = ['1', '2', topic, 'bin'].map((s) => enc.encode(s));
    const payload = Uint8Array.from([0, 1, 2, 0xfe, 0xff]);
    const frame = Buffer.concat([
      Buffer.from([3, jr.length, ref.length, top.length, ev.length, 0, 0]),
      jr, ref, top, ev, payload,
    ]);
    a.send(new Uint8Array(frame));
    const got = await b.expect((m) => m.kind === 4, 3000, 'kind 4 broadcast at b');
    assert.equal(got.topic, topic);
    assert.equal(got.userEvent, 'bin');
    assert.equal(got.encoding, 0);
    assert.deepEqual([...got.payload], [...payload]);
    assert.ok(!b.inbox.items.some((m) => m.kind !== undefined && m.kind !== 4), 'only kind 4 binary frames');
  });
});
