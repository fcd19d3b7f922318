// Channel lifecycle through realtime-js on vsn 1.0.0 and 2.0.0: join errors (unmatched topic,
// TopicNameRequired, private channel as anon, bad channel tokens), private joins, and leave with
// the server's phx_reply + phx_close.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  disconnectAll,
  makeClient,
  RealtimeChannel,
  subscribe,
  subscribed,
  uniqueTopic,
  VSNS,
  wire,
} from './lib/client.mjs';
import { decodeFrame } from './lib/frames.mjs';
import { startHerald } from './lib/herald.mjs';
import { anonToken, authToken, expiredToken, forgedToken, serviceToken } from './lib/tokens.mjs';
import { waitFor } from './lib/wait.mjs';

let server;
before(async () => {
  server = await startHerald();
});
afterEach(disconnectAll);
after(async () => server?.stop());

/** Subscribes `channel` and returns the first status, expecting CHANNEL_ERROR. */
async function joinError(channel) {
  const statuses = subscribe(channel);
  const first = await statuses.next(5000, () => `a join reply on ${channel.topic}; ${wire(channel.socket)}`);
  assert.equal(
    first.status,
    'CHANNEL_ERROR',
    `expected CHANNEL_ERROR on ${channel.topic}, got ${first.status}; ${wire(channel.socket)}`,
  );
  return first.err?.message;
}

const incoming = (client) => client.tap.frames.filter((f) => f.dir === 'in').map(decodeFrame);

for (const vsn of VSNS) {
  describe(`join errors on vsn ${vsn}`, () => {
    test('a topic without the realtime: prefix gets "unmatched topic"', async () => {
      const client = makeClient(server, { vsn });
      const channel = new RealtimeChannel(uniqueTopic('plain'), { config: {} }, client);
      assert.equal(await joinError(channel), 'unmatched topic');
    });

    test('"realtime:" alone gets TopicNameRequired', async () => {
      const client = makeClient(server, { vsn });
      const channel = client.channel('');
      assert.equal(channel.topic, 'realtime:');
      assert.equal(await joinError(channel), 'TopicNameRequired: You must provide a topic name');
    });

    test('a private channel refuses an anon token', async () => {
      const client = makeClient(server, { vsn, token: anonToken() });
      const name = uniqueTopic('secret');
      const channel = client.channel(name, { config: { private: true } });
      assert.equal(
        await joinError(channel),
        `Unauthorized: You do not have permissions to read from this Channel topic: ${name}`,
      );
    });

    test("the join's access_token decides, not the socket's apikey", async () => {
      const client = makeClient(server, { vsn, token: authToken() });
      await client.setAuth(anonToken());
      const name = uniqueTopic('secret');
      const channel = client.channel(name, { config: { private: true } });
      assert.equal(
        await joinError(channel),
        `Unauthorized: You do not have permissions to read from this Channel topic: ${name}`,
      );
    });

    test('an expired access_token gets InvalidJWTToken: Token has expired', async () => {
      const client = makeClient(server, { vsn, token: anonToken() });
      await client.setAuth(expiredToken(30));
      const reason = await joinError(client.channel(uniqueTopic()));
      assert.match(reason, /^InvalidJWTToken: Token has expired \d+ seconds ago$/);
    });

    test('a forged access_token gets JwtSignatureError', async () => {
      const client = makeClient(server, { vsn, token: anonToken() });
      await client.setAuth(forgedToken());
      const reason = await joinError(client.channel(uniqueTopic()));
      assert.equal(reason, 'JwtSignatureError: Failed to validate JWT signature');
    });
  });

  describe(`private channels on vsn ${vsn}`, () => {
    for (const [role, make] of [['authenticated', authToken], ['service_role', serviceToken]]) {
      test(`a ${role} token can join and broadcast on a private channel`, async () => {
        const client = makeClient(server, { vsn, token: make() });
        const channel = client.channel(uniqueTopic('secret'), {
          config: { private: true, broadcast: { self: true, ack: true } },
        });
        const got = [];
        channel.on('broadcast', { event: 'p' }, (m) => got.push(m));
        await subscribed(channel);
        assert.equal(await channel.send({ type: 'broadcast', event: 'p', payload: { k: 1 } }, { timeout: 3000 }), 'ok');
        await waitFor(() => got.length === 1, 5000, () => `own private broadcast; ${wire(client)}`);
        assert.deepEqual(got[0].payload, { k: 1 });
      });
    }

    test('a private and a public channel of the same name are separate', async () => {
      const name = uniqueTopic('split');
      const priv = makeClient(server, { vsn, token: authToken() });
      const pub = makeClient(server, { vsn, token: authToken() });
      const privChannel = priv.channel(name, { config: { private: true } });
      const pubChannel = pub.channel(name, { config: { broadcast: { self: true } } });
      const privGot = [];
      const pubGot = [];
      privChannel.on('broadcast', { event: '*' }, (m) => privGot.push(m));
      pubChannel.on('broadcast', { event: '*' }, (m) => pubGot.push(m));
      await subscribed(privChannel);
      await subscribed(pubChannel);

      // A wrongly routed message would be queued for the other member in the same fan-out as the
      // delivery each test step waits for, so it would show up before the next step's message.
      await pubChannel.send({ type: 'broadcast', event: 'public-only', payload: {} });
      await waitFor(() => pubGot.length === 1, 5000, () => `public self-broadcast; ${wire(pub)}`);
      const sender = makeClient(server, { vsn, token: serviceToken() });
      const senderChannel = sender.channel(name, { config: { private: true } });
      await subscribed(senderChannel);
      await senderChannel.send({ type: 'broadcast', event: 'private-only', payload: {} });
      await waitFor(() => privGot.length >= 1, 5000, () => `private broadcast; ${wire(priv)}`);
      await pubChannel.send({ type: 'broadcast', event: 'public-again', payload: {} });
      await waitFor(() => pubGot.length >= 2, 5000, () => `second public self-broadcast; ${wire(pub)}`);
      assert.deepEqual(privGot.map((m) => m.event), ['private-only']);
      assert.deepEqual(pubGot.map((m) => m.event), ['public-only', 'public-again']);
    });
  });

  describe(`leave on vsn ${vsn}`, () => {
    test("unsubscribe() resolves 'ok', the channel is closed, the server sends phx_close", async () => {
      const client = makeClient(server, { vsn });
      const topicName = uniqueTopic();
      const channel = client.channel(topicName);
      const statuses = await subscribed(channel);
      const joinRef = channel.joinPush.ref;

      assert.equal(await channel.unsubscribe(), 'ok');
      assert.equal(channel.state, 'closed');
      await statuses.find((s) => s.status === 'CLOSED', 2000, 'CLOSED status');

      // On the wire: the leave's reply is ok, then phx_close carrying ref = join_ref.
      const topic = `realtime:${topicName}`;
      const leave = client.tap.frames
        .filter((f) => f.dir === 'out')
        .map(decodeFrame)
        .find((m) => m.topic === topic && m.event === 'phx_leave');
      assert.ok(leave, 'client sent phx_leave');
      const close = await waitFor(
        () => incoming(client).find((m) => m.topic === topic && m.event === 'phx_close'),
        3000,
        () => `phx_close from the server; ${wire(client)}`,
      );
      assert.equal(close.ref, joinRef, `phx_close must carry ref = join_ref; ${wire(client)}`);
      assert.deepEqual(close.payload, {});
      const frames = incoming(client);
      const replyAt = frames.findIndex((m) => m.topic === topic && m.event === 'phx_reply' && m.ref === leave.ref);
      const closeAt = frames.findIndex((m) => m.topic === topic && m.event === 'phx_close');
      assert.ok(replyAt >= 0, `a phx_reply to the leave; ${wire(client)}`);
      assert.equal(frames[replyAt].payload.status, 'ok');
      assert.ok(replyAt < closeAt, `the leave reply precedes phx_close; ${wire(client)}`);
    });

    test('after leaving, the channel gets no more broadcasts and can be joined again', async () => {
      const name = uniqueTopic();
      const client = makeClient(server, { vsn });
      const first = client.channel(name);
      await subscribed(first);
      assert.equal(await client.removeChannel(first), 'ok');

      const again = client.channel(name, { config: { broadcast: { self: true } } });
      const got = [];
      again.on('broadcast', { event: '*' }, (m) => got.push(m));
      await subscribed(again);
      assert.notEqual(again.joinPush.ref, first.joinPush.ref);
      await again.send({ type: 'broadcast', event: 'back', payload: { n: 2 } });
      await waitFor(() => got.length === 1, 5000, () => `broadcast on the rejoined channel; ${wire(client)}`);
      assert.deepEqual(got[0].payload, { n: 2 });
    });
  });
}
