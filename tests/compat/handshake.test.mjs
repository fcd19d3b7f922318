// Connecting: refused handshakes (HTTP 401 + JSON error before the upgrade) for missing, expired,
// incomplete, malformed and forged tokens; then a client with a good token connects, on both
// WebSocket paths (/socket and /realtime/v1) and both vsn.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { disconnectAll, listen, makeClient, nextBroadcast, subscribed, uniqueTopic, VSNS, wire } from './lib/client.mjs';
import { startHerald } from './lib/herald.mjs';
import { tryHandshake } from './lib/raw.mjs';
import {
  anonToken,
  expiredToken,
  forgedToken,
  serviceToken,
  tokenWithoutExp,
  tokenWithoutRole,
} from './lib/tokens.mjs';
import { Inbox } from './lib/wait.mjs';

let server;
before(async () => {
  server = await startHerald();
});
afterEach(disconnectAll);
after(async () => server?.stop());

const PATHS = ['/socket', '/realtime/v1'];
const wsUrl = (path, query) => `ws://127.0.0.1:${server.port}${path}/websocket${query}`;

const REFUSALS = [
  ['no apikey', () => '?vsn=2.0.0', 'API key is missing'],
  ['an expired token', () => `?apikey=${expiredToken()}&vsn=2.0.0`, 'Token has expired'],
  ['a token without role', () => `?apikey=${tokenWithoutRole()}&vsn=1.0.0`, 'Fields `role` and `exp` are required in JWT'],
  ['a token without exp', () => `?apikey=${tokenWithoutExp()}&vsn=2.0.0`, 'Fields `role` and `exp` are required in JWT'],
  ['something that is not a JWT', () => '?apikey=not-a-jwt&vsn=2.0.0', 'The token provided is not a valid JWT'],
  ['a forged signature', () => `?apikey=${forgedToken()}&vsn=1.0.0`, 'Failed to validate JWT signature'],
];

describe('refused handshakes', () => {
  for (const path of PATHS) {
    for (const [name, query, error] of REFUSALS) {
      test(`${path}: ${name} gets 401 {"error": "${error}"}`, async () => {
        const res = await tryHandshake(wsUrl(path, query()));
        assert.equal(res.opened, false, 'the upgrade must be refused');
        assert.equal(res.status, 401, res.body);
        assert.deepEqual(res.json, { error: error }, res.body);
      });
    }
  }

  test('an x-api-key header wins over the apikey query parameter', async () => {
    const refused = await tryHandshake(wsUrl('/socket', `?apikey=${anonToken()}&vsn=2.0.0`), {
      headers: { 'x-api-key': forgedToken() },
    });
    assert.equal(refused.status, 401, refused.body);
    assert.deepEqual(refused.json, { error: 'Failed to validate JWT signature' });
    const accepted = await tryHandshake(wsUrl('/socket', `?apikey=${forgedToken()}&vsn=2.0.0`), {
      headers: { 'x-api-key': anonToken() },
    });
    assert.equal(accepted.opened, true, JSON.stringify(accepted));
  });

  test('an unknown vsn is refused with 400', async () => {
    const res = await tryHandshake(wsUrl('/socket', `?apikey=${anonToken()}&vsn=3.0.0`));
    assert.equal(res.opened, false);
    assert.equal(res.status, 400, res.body);
  });

  test('a missing vsn means 1.0.0 and is accepted', async () => {
    const res = await tryHandshake(wsUrl('/socket', `?apikey=${anonToken()}`));
    assert.equal(res.opened, true, JSON.stringify(res));
  });

  test('realtime-js with a forged token never opens; the same server accepts a good token', async () => {
    const bad = makeClient(server, { token: forgedToken(), reconnectAfterMs: () => 60_000 });
    const events = new Inbox('socket events');
    const socket = bad.socketAdapter.getSocket();
    socket.onOpen(() => events.push('open'));
    socket.onClose(() => events.push('close'));
    bad.connect();
    await events.find((e) => e === 'close', 5000, 'the refused socket to close');
    assert.deepEqual(events.items.filter((e) => e === 'open'), [], 'the refused socket never opened');
    await bad.disconnect();

    const good = makeClient(server, { token: anonToken() });
    await subscribed(good.channel(uniqueTopic()));
  });
});

describe('accepted connections', () => {
  for (const path of PATHS) {
    for (const vsn of VSNS) {
      test(`${path} with vsn ${vsn}: subscribe, broadcast, receive`, async () => {
        const topic = uniqueTopic();
        const a = makeClient(server, { vsn, path, token: anonToken() });
        const b = makeClient(server, { vsn, path, token: serviceToken() });
        const ca = a.channel(topic);
        const cb = b.channel(topic);
        const inbox = listen(cb);
        await subscribed(ca);
        await subscribed(cb);
        assert.ok(a.endpointURL().includes(`${path}/websocket?`), a.endpointURL());
        assert.ok(a.endpointURL().includes(`vsn=${vsn}`), a.endpointURL());

        await ca.send({ type: 'broadcast', event: 'hello', payload: { path, vsn } });
        const got = await nextBroadcast(inbox, b);
        assert.deepEqual(got.payload, { path, vsn });
      });
    }
  }

  for (const vsn of VSNS) {
    test(`vsn ${vsn}: the client's heartbeats are answered`, async () => {
      const client = makeClient(server, { vsn, heartbeatIntervalMs: 200 });
      const beats = new Inbox('heartbeat statuses');
      client.onHeartbeat((status) => beats.push(status));
      await subscribed(client.channel(uniqueTopic()));
      await beats.find(
        () => beats.items.filter((s) => s === 'ok').length >= 2,
        5000,
        () => `two answered heartbeats (statuses: ${beats.items.join(', ')}); ${wire(client)}`,
      );
      assert.deepEqual(beats.items.filter((s) => s !== 'sent' && s !== 'ok'), [], beats.items.join(', '));
    });
  }

  test('/realtime/v1: httpSend() goes to /realtime/v1/api/broadcast and is delivered', async () => {
    const topic = uniqueTopic();
    const receiver = makeClient(server, { path: '/realtime/v1' });
    const channel = receiver.channel(topic);
    const inbox = listen(channel);
    await subscribed(channel);

    const sender = makeClient(server, { path: '/realtime/v1', token: serviceToken() });
    const out = sender.channel(topic);
    assert.ok(out.broadcastEndpointURL.includes('/realtime/v1/api/broadcast'), out.broadcastEndpointURL);
    assert.deepEqual(await out.httpSend('via-http', { n: 1 }), { success: true });
    const got = await nextBroadcast(inbox, receiver, 5000, 'the HTTP broadcast');
    assert.deepEqual(got.payload, { n: 1 });
  });
});
