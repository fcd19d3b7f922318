// Broadcast over WebSocket with the real realtime-js client, on vsn 1.0.0 (JSON objects) and
// 2.0.0 (JSON arrays + binary kinds 3/4): self on/off, ack, ordering of 300 messages, binary
// ArrayBuffer payloads, and delivery across the two serializers.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { assertBinaryBroadcast, assertBroadcast, everyByte, RICH_PAYLOAD } from './lib/assertions.mjs';
import { disconnectAll, listen, makeClient, nextBroadcast, subscribed, uniqueTopic, VSNS, wire } from './lib/client.mjs';
import { startHerald } from './lib/herald.mjs';

let server;
// The ordering test sends bursts; keep the per-second message limit out of its way.
before(async () => {
  server = await startHerald({ env: { HERALD_MAX_MESSAGES_PER_SECOND: '100000' } });
});
afterEach(disconnectAll);
after(async () => server?.stop());

/** A client of `vsn` subscribed to `topic` with `config`, collecting its broadcasts. */
async function member(vsn, topic, config = {}) {
  const client = makeClient(server, { vsn });
  const channel = client.channel(topic, { config });
  const inbox = listen(channel);
  await subscribed(channel);
  return { client, channel, inbox };
}

const send = (m, event, payload, opts) => m.channel.send({ type: 'broadcast', event, payload }, opts);

for (const vsn of VSNS) {
  describe(`broadcast on vsn ${vsn}`, () => {
    test('self: false — others receive the message, the sender does not', async () => {
      const topic = uniqueTopic();
      const a = await member(vsn, topic, { broadcast: { self: false } });
      const b = await member(vsn, topic, { broadcast: { self: false } });

      assert.equal(await send(a, 'ping', { from: 'a' }), 'ok');
      assertBroadcast(await nextBroadcast(b.inbox, b.client), 'ping', { from: 'a' });

      // b answers only after it has a's message, so a copy of a's own message would reach a first.
      await send(b, 'pong', { from: 'b' });
      assertBroadcast(await nextBroadcast(a.inbox, a.client), 'pong', { from: 'b' });
      // Likewise for b: the next thing b sees must be a's second message, not its own pong.
      await send(a, 'ping2', { from: 'a' });
      assertBroadcast(await nextBroadcast(b.inbox, b.client), 'ping2', { from: 'a' });
    });

    test('self: true — the sender receives its own message too', async () => {
      const topic = uniqueTopic();
      const a = await member(vsn, topic, { broadcast: { self: true } });
      const b = await member(vsn, topic, { broadcast: { self: false } });

      assert.equal(await send(a, 'echo', { n: 1 }), 'ok');
      assertBroadcast(await nextBroadcast(a.inbox, a.client, 5000, 'own message'), 'echo', { n: 1 });
      assertBroadcast(await nextBroadcast(b.inbox, b.client), 'echo', { n: 1 });
    });

    test("ack: true — send() resolves 'ok' from the server's reply", async () => {
      const topic = uniqueTopic();
      const a = await member(vsn, topic, { broadcast: { ack: true } });
      const b = await member(vsn, topic);

      const status = await send(a, 'acked', { n: 7 }, { timeout: 3000 });
      assert.equal(status, 'ok', `send() resolved ${status}; ${wire(a.client)}`);
      assertBroadcast(await nextBroadcast(b.inbox, b.client), 'acked', { n: 7 });
    });

    test("an oversize payload with ack: true is refused ('error') and not delivered", async () => {
      const topic = uniqueTopic();
      const a = await member(vsn, topic, { broadcast: { ack: true } });
      const b = await member(vsn, topic);

      const huge = { blob: 'x'.repeat(300_000) }; // above HERALD_MAX_PAYLOAD_BYTES (262144)
      const status = await send(a, 'huge', huge, { timeout: 3000 });
      assert.equal(status, 'error', `send() resolved ${status}; ${wire(a.client)}`);
      assert.equal(await send(a, 'small', { n: 1 }, { timeout: 3000 }), 'ok');
      assertBroadcast(await nextBroadcast(b.inbox, b.client), 'small', { n: 1 });
    });

    test('300 messages from one sender arrive in order', async () => {
      const topic = uniqueTopic();
      const a = await member(vsn, topic);
      const b = await member(vsn, topic);
      const total = 300;

      for (let seq = 0; seq < total; seq += 1) await send(a, 'seq', { seq });
      const got = await b.inbox.count(total, 15000, () => `${total} broadcasts; ${wire(b.client)}`);
      assert.equal(got.length, total, 'no extra messages');
      assert.deepEqual(
        got.map((m) => m.payload.seq),
        Array.from({ length: total }, (_, i) => i),
      );
    });
  });
}

describe('binary payloads (vsn 2.0.0 only)', () => {
  test('an ArrayBuffer sent by a 2.0.0 client reaches a 2.0.0 receiver byte for byte', async () => {
    const topic = uniqueTopic();
    const a = await member('2.0.0', topic);
    const b = await member('2.0.0', topic);
    const bytes = everyByte();

    assert.equal(await send(a, 'bin', bytes.slice().buffer), 'ok');
    assertBinaryBroadcast(await nextBroadcast(b.inbox, b.client), 'bin', bytes);
  });

  test('an empty ArrayBuffer stays an empty ArrayBuffer', async () => {
    const topic = uniqueTopic();
    const a = await member('2.0.0', topic);
    const b = await member('2.0.0', topic);

    await send(a, 'empty', new ArrayBuffer(0));
    assertBinaryBroadcast(await nextBroadcast(b.inbox, b.client), 'empty', new Uint8Array(0));
  });

  test('a binary broadcast is not delivered to a 1.0.0 subscriber; later JSON ones are', async () => {
    const topic = uniqueTopic();
    const sender = await member('2.0.0', topic);
    const v2 = await member('2.0.0', topic);
    const v1 = await member('1.0.0', topic);
    const bytes = everyByte();

    await send(sender, 'bin', bytes.slice().buffer);
    await send(sender, 'after', { marker: true });

    // The 2.0.0 subscriber proves both were sent, in this order.
    assertBinaryBroadcast(await nextBroadcast(v2.inbox, v2.client), 'bin', bytes);
    assertBroadcast(await nextBroadcast(v2.inbox, v2.client), 'after', { marker: true });
    // The 1.0.0 subscriber's first broadcast must be the JSON marker.
    assertBroadcast(await nextBroadcast(v1.inbox, v1.client), 'after', { marker: true });
  });
});

describe('across serializers', () => {
  for (const [from, to] of [['1.0.0', '2.0.0'], ['2.0.0', '1.0.0']]) {
    test(`a ${from} sender reaches a ${to} receiver with the payload intact`, async () => {
      const topic = uniqueTopic();
      const a = await member(from, topic);
      const b = await member(to, topic);

      await send(a, 'rich', RICH_PAYLOAD);
      assertBroadcast(await nextBroadcast(b.inbox, b.client), 'rich', RICH_PAYLOAD);
      // And back the other way on the same channel.
      await send(b, 'reply', { ok: 'ü' });
      assertBroadcast(await nextBroadcast(a.inbox, a.client), 'reply', { ok: 'ü' });
    });
  }
});
