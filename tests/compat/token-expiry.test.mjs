// A channel whose access token expires: the server pushes a `system` error "Token has expired ..."
// then phx_close, realtime-js reports CLOSED, and the socket stays open and usable. A token
// refreshed with setAuth() (an access_token push) keeps the channel open past the old expiry.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { disconnectAll, listen, makeClient, nextBroadcast, subscribed, uniqueTopic, VSNS, wire } from './lib/client.mjs';
import { decodeFrame } from './lib/frames.mjs';
import { startHerald } from './lib/herald.mjs';
import { authToken, nowSecs, signJwt } from './lib/tokens.mjs';
import { Inbox } from './lib/wait.mjs';

let server;
before(async () => {
  server = await startHerald();
});
afterEach(disconnectAll);
after(async () => server?.stop());

for (const vsn of VSNS) {
  describe(`access token expiry on vsn ${vsn}`, () => {
    test('the channel gets a system error and is closed; the socket stays usable', async () => {
      const client = makeClient(server, { vsn, token: authToken({ ttl: 3600 }) });
      const socketEvents = new Inbox('socket events');
      const socket = client.socketAdapter.getSocket();
      socket.onClose((e) => socketEvents.push({ type: 'close', code: e?.code }));
      socket.onError(() => socketEvents.push({ type: 'error' }));

      // The channel's own token (sent in phx_join) lives about two seconds.
      const exp = nowSecs() + 2;
      await client.setAuth(signJwt({ role: 'authenticated', sub: 'user-1', exp }));
      const name = uniqueTopic('expiring');
      const channel = client.channel(name);
      const system = new Inbox(`system events on ${name}`);
      channel.on('system', {}, (payload) => system.push(payload));
      const statuses = await subscribed(channel);

      const notice = await system.next(8000, () => `a system event on ${name}; ${wire(client)}`);
      assert.equal(notice.status, 'error', JSON.stringify(notice));
      assert.match(notice.message, /^Token has expired \d+ seconds ago$/, JSON.stringify(notice));
      assert.equal(notice.channel, name, JSON.stringify(notice));
      assert.ok(Date.now() >= (exp - 1) * 1000, 'not before the token expired');

      await statuses.find((s) => s.status === 'CLOSED', 3000, () => `CLOSED after the system error; ${wire(client)}`);
      assert.equal(channel.state, 'closed');

      // On the wire: system error first, then phx_close with ref = join_ref.
      const topic = `realtime:${name}`;
      const frames = client.tap.frames.filter((f) => f.dir === 'in').map(decodeFrame);
      const sysIndex = frames.findIndex((m) => m.topic === topic && m.event === 'system');
      const closeIndex = frames.findIndex((m) => m.topic === topic && m.event === 'phx_close');
      assert.ok(sysIndex >= 0 && closeIndex > sysIndex, `system error then phx_close; ${wire(client)}`);
      assert.equal(frames[closeIndex].ref, channel.joinPush.ref);

      // The socket was never closed and still carries a new channel.
      assert.ok(client.isConnected(), 'socket still connected');
      assert.deepEqual(socketEvents.items, [], 'no socket close or error');
      await client.setAuth(authToken({ ttl: 3600 }));
      const next = client.channel(uniqueTopic('after-expiry'), { config: { broadcast: { self: true } } });
      const inbox = listen(next);
      await subscribed(next);
      await next.send({ type: 'broadcast', event: 'still-here', payload: { ok: true } });
      const got = await nextBroadcast(inbox, client);
      assert.deepEqual(got.payload, { ok: true });
      assert.deepEqual(socketEvents.items, [], 'no socket close or error');
    });

    test('setAuth() with a fresh token before expiry keeps the channel open', async () => {
      const exp = nowSecs() + 2;
      const short = signJwt({ role: 'authenticated', sub: 'user-1', exp });
      const name = uniqueTopic('refreshed');

      // A control channel on another socket keeps the short token: its system error shows the
      // server's expiry has come.
      const control = makeClient(server, { vsn, token: authToken() });
      await control.setAuth(short);
      const controlChannel = control.channel(name);
      const controlSystem = new Inbox('control system events');
      controlChannel.on('system', {}, (p) => controlSystem.push(p));
      await subscribed(controlChannel);

      const client = makeClient(server, { vsn, token: authToken() });
      await client.setAuth(short);
      const channel = client.channel(name, { config: { broadcast: { self: true } } });
      const system = new Inbox('system events');
      channel.on('system', {}, (p) => system.push(p));
      const inbox = listen(channel);
      const statuses = await subscribed(channel);
      await client.setAuth(authToken({ ttl: 3600 }));
      assert.ok(
        client.tap.frames.some((f) => f.dir === 'out' && f.text?.includes('"access_token"') && !f.text.includes('phx_join')),
        `an access_token push was sent; ${wire(client)}`,
      );

      const expired = await controlSystem.next(8000, () => `the control channel to expire; ${wire(control)}`);
      assert.match(expired.message, /^Token has expired/);

      await channel.send({ type: 'broadcast', event: 'alive', payload: { n: 1 } });
      assert.deepEqual((await nextBroadcast(inbox, client)).payload, { n: 1 });
      assert.deepEqual(system.items, [], `no system event on the refreshed channel; ${wire(client)}`);
      assert.ok(!statuses.items.some((s) => s.status === 'CLOSED'), 'refreshed channel not closed');
      assert.equal(channel.state, 'joined');
    });
  });
}
