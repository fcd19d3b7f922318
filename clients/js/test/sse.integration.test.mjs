// The SSE transport (plus HTTP sends) against a real Herald: receive and send, a broken stream with
// messages published during the outage, resuming after a "page reload" from the stored cursor,
// fallback from a WebSocket that cannot open, presence, and a refused token.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startHerald } from './helpers/herald.mjs';
import { startProxy } from './helpers/proxy.mjs';
import { MemoryStorage } from './helpers/fakes.mjs';
import { tokenExpiresAt } from '../herald.js';
import { anonToken, expiredToken, token } from './helpers/tokens.mjs';
import { Inbox, range, waitFor } from './helpers/wait.mjs';
import { WebSocket, heraldClient, joined, ns, numbered, recordBroadcasts, waitState } from './helpers/client.mjs';

let server;
const clients = [];
const proxies = [];

before(async () => {
  server = await startHerald();
});

after(async () => {
  for (const c of clients) c.disconnect();
  for (const p of proxies) await p.close();
  await server?.stop();
});

function client(url = server.httpUrl, options = {}) {
  const c = heraldClient(url, { token: anonToken(), transports: ['sse'], ...options });
  clients.push(c);
  return c;
}

test('receives over SSE and sends over HTTP; a WebSocket client sees the sends once', async () => {
  const s = client();
  const w = client(server.httpUrl, { transports: ['websocket'] });
  const chS = s.channel('sse-basic');
  const chW = w.channel('sse-basic');
  const gotS = recordBroadcasts(chS);
  const gotW = recordBroadcasts(chW);
  chS.subscribe();
  chW.subscribe();
  await Promise.all([joined(chS), joined(chW)]);
  assert.equal(s.state.transport, 'sse');
  await server.publish(numbered('sse-basic', 1, 3));
  await gotS.count(3, 3000);
  assert.deepEqual(ns(gotS), [1, 2, 3]);
  assert.deepEqual(gotS.items.map((m) => m.meta.offset), [1, 2, 3]);
  assert.deepEqual(await chS.send('from-sse', { n: 4 }), { status: 'ok' });
  await chW.send('from-ws', { n: 5 });
  await gotW.find((m) => m.event === 'from-sse', 3000);
  await gotS.find((m) => m.event === 'from-ws', 3000);
  assert.equal(gotS.items.filter((m) => m.event === 'from-sse').length, 0, 'own message skipped (self: false)');
  await server.publishSingle('sse-basic', 'bin', new Uint8Array([5, 6]), 'application/octet-stream');
  const bin = await gotS.find((m) => m.event === 'bin', 3000);
  assert.deepEqual([...bin.payload], [5, 6], 'base64 payloads arrive as bytes');
});

test('a broken stream: messages published while disconnected arrive once, in order', async () => {
  const proxy = await startProxy(server.port);
  proxies.push(proxy);
  const s = client(`http://127.0.0.1:${proxy.port}`);
  const chA = s.channel('sse-break-a');
  const chB = s.channel('sse-break-b');
  const gotA = recordBroadcasts(chA);
  const gotB = recordBroadcasts(chB);
  const recoveries = [];
  chA.on('recovery', (e) => recoveries.push(e));
  chB.on('recovery', (e) => recoveries.push(e));
  chA.subscribe();
  chB.subscribe();
  await Promise.all([joined(chA), joined(chB)]);
  const interleaved = (from, to) => numbered('sse-break-a', from, to).flatMap((m, i) => [m, numbered('sse-break-b', from + i, from + i)[0]]);
  await server.publish(interleaved(1, 10));
  await gotA.count(10, 3000);
  await gotB.count(10, 3000);
  proxy.hold();
  const mark = s.states.length;
  assert.ok(proxy.break() >= 1);
  await waitState(s, 'reconnecting', 3000, mark);
  await server.publish(interleaved(11, 25));
  const queued = chA.send('while-down', { n: 'q' });
  proxy.release();
  await waitState(s, 'live', 5000, mark);
  await server.publish(interleaved(26, 30));
  await gotA.count(30, 5000);
  await gotB.count(30, 5000);
  assert.deepEqual(ns(gotA), range(1, 30));
  assert.deepEqual(ns(gotB), range(1, 30));
  assert.ok(gotA.items.slice(10, 25).every((m) => m.meta.replayed === true), 'the gap was replayed');
  assert.deepEqual(recoveries, []);
  assert.deepEqual(await queued, { status: 'ok' });
});

test('a reloaded page resumes from the cursor kept in storage', async () => {
  const storage = new MemoryStorage();
  const first = client(server.httpUrl, { storage });
  const ch1 = first.channel('sse-reload');
  const got1 = recordBroadcasts(ch1);
  ch1.subscribe();
  await joined(ch1);
  await server.publish(numbered('sse-reload', 1, 5));
  await got1.count(5, 3000);
  first.disconnect();
  const key = [...storage.map.keys()].find((k) => k.endsWith(':sse:public'));
  assert.ok(key, 'a cursor was stored');
  await server.publish(numbered('sse-reload', 6, 12));
  const second = client(server.httpUrl, { storage });
  const ch2 = second.channel('sse-reload');
  const got2 = recordBroadcasts(ch2);
  const recoveries = [];
  ch2.on('recovery', (e) => recoveries.push(e));
  ch2.subscribe();
  await got2.count(7, 5000);
  await server.publish(numbered('sse-reload', 13, 13));
  await got2.count(8, 3000);
  assert.deepEqual(ns(got2), range(6, 13));
  assert.deepEqual(recoveries, []);
  // A tampered cursor is not trusted: the channel is reported unrecovered and continues live.
  second.disconnect();
  storage.setItem(key, JSON.stringify({ cursor: 'AAAA-not-a-cursor', topics: ['sse-reload'] }));
  const third = client(server.httpUrl, { storage });
  const ch3 = third.channel('sse-reload');
  const rec3 = new Inbox('recoveries');
  ch3.on('recovery', (e) => rec3.push(e));
  const got3 = recordBroadcasts(ch3);
  ch3.subscribe();
  const [r] = await rec3.count(1, 5000);
  assert.equal(r.recovered, false);
  await server.publish(numbered('sse-reload', 14, 14));
  await got3.count(1, 3000);
  assert.deepEqual(ns(got3), [14]);
});

test('falls back to SSE when the WebSocket cannot open, and receives', async () => {
  // A WebSocket whose every connection is refused (port 1), as behind a proxy that blocks upgrades.
  class BlockedWebSocket extends WebSocket {
    constructor(url) {
      super(url.replace(/:\d+\//, ':1/'));
    }
  }
  const c = client(server.httpUrl, { transports: ['websocket', 'sse'], WebSocket: BlockedWebSocket });
  const ch = c.channel('sse-fallback');
  const got = recordBroadcasts(ch);
  ch.subscribe();
  await joined(ch, 8000);
  assert.equal(c.state.transport, 'sse');
  assert.ok(c.states.some((s) => s.transport === 'websocket' && s.state === 'reconnecting'));
  await server.publish(numbered('sse-fallback', 1, 2));
  await got.count(2, 3000);
  assert.deepEqual(await ch.send('e', { n: 3 }), { status: 'ok' });
});

test('presence over SSE: state and diffs from a WebSocket member', async () => {
  const s = client();
  const w = client(server.httpUrl, { transports: ['websocket'] });
  const chS = s.channel('sse-presence');
  const syncs = new Inbox('syncs');
  chS.on('presence', 'sync', () => syncs.push(chS.presenceState()));
  chS.subscribe();
  await joined(chS);
  const chW = w.channel('sse-presence', { presence: { key: 'bob' } });
  chW.subscribe();
  await joined(chW);
  await chW.track({ mood: 'ok' });
  await waitFor(() => chS.presenceState().bob?.[0]?.mood === 'ok', 3000, 'bob in the SSE presence state');
  w.disconnect();
  await waitFor(() => chS.presenceState().bob === undefined, 3000, 'bob to leave');
  assert.ok(syncs.length >= 2);
});

test('private channels an anon token may not read are reported errored; public ones keep working', async () => {
  const c = client();
  const pub = c.channel('sse-mixed');
  const priv = c.channel('sse-mixed-private', { private: true });
  const statuses = new Inbox('private channel statuses');
  priv.on('status', (s) => statuses.push(s));
  const got = recordBroadcasts(pub);
  pub.subscribe();
  priv.subscribe();
  const errored = await statuses.find((s) => s.status === 'errored', 5000);
  assert.match(errored.reason, /Unauthorized/);
  await joined(pub, 5000);
  await server.publish(numbered('sse-mixed', 1, 1));
  await got.count(1, 3000);
  assert.equal(c.state.state, 'live');
  assert.equal(priv.status, 'errored');
});

test('an expired token on the stream means failed (HTTP 401)', async () => {
  const c = client(server.httpUrl, { token: expiredToken() });
  c.channel('sse-auth').subscribe();
  await waitState(c, 'failed', 5000);
  assert.match(c.state.reason, /unauthorized/);
});

test('streams are replaced with a refreshed token before it expires: no reconnect, no loss', async () => {
  const reasons = [];
  const c = client(server.httpUrl, {
    token: undefined,
    getToken: (why) => {
      reasons.push(why);
      return token({ role: 'anon', ttl: 3 });
    },
  });
  const ch = c.channel('sse-refresh');
  const got = recordBroadcasts(ch);
  const recoveries = [];
  ch.on('recovery', (e) => recoveries.push(e));
  ch.subscribe();
  await joined(ch);
  const firstExpiry = tokenExpiresAt(c.token);
  await server.publish(numbered('sse-refresh', 1, 1));
  await got.count(1, 3000);
  // Past the first token's expiry: Herald would have ended a stream opened with it.
  await waitFor(() => Date.now() > firstExpiry + 1200, 6000, 'the first token to expire');
  await server.publish(numbered('sse-refresh', 2, 2));
  await got.count(2, 3000);
  assert.deepEqual(ns(got), [1, 2]);
  assert.ok(reasons.includes('refresh'), `refreshed (${reasons})`);
  assert.deepEqual(c.states.filter((s) => s.state === 'reconnecting'), []);
  assert.deepEqual(recoveries, []);
});

test('a stream whose static token expires is ended by Herald; the client then fails (401)', async () => {
  const c = client(server.httpUrl, { token: token({ role: 'anon', ttl: 2 }) });
  c.channel('sse-expiry').subscribe();
  await waitState(c, 'live', 5000);
  await waitState(c, 'failed', 6000);
  const down = c.states.find((s) => s.state === 'reconnecting');
  assert.match(down.reason, /Token has expired/);
});

test('a stream that drops before its first broadcast resumes from the `ready` cursor: no loss, no recovered:false', async () => {
  // The channel has a position before the stream opens (it starts live, nothing replayed).
  await server.publish(numbered('sse-ready', 1, 2));
  const proxy = await startProxy(server.port);
  proxies.push(proxy);
  const storage = new MemoryStorage();
  const s = client(`http://127.0.0.1:${proxy.port}`, { storage });
  const ch = s.channel('sse-ready');
  const got = recordBroadcasts(ch);
  const recoveries = [];
  ch.on('recovery', (e) => recoveries.push(e));
  ch.subscribe();
  await joined(ch);
  const key = await waitFor(() => [...storage.map.keys()].find((k) => k.endsWith(':sse:public')), 3000, 'the ready cursor in storage');
  const cursor = JSON.parse(storage.getItem(key)).cursor;
  assert.equal(got.length, 0, 'no broadcast yet');

  proxy.hold();
  const mark = s.states.length;
  const before = proxy.connections.length;
  assert.ok(proxy.break() >= 1);
  await waitState(s, 'reconnecting', 3000, mark);
  await waitFor(() => proxy.connections.length > before, 3000, 'the reconnect attempt (held by the proxy)');
  await server.publish(numbered('sse-ready', 3, 5));
  proxy.release();
  await waitState(s, 'live', 5000, mark);
  await server.publish(numbered('sse-ready', 6, 6));
  await got.count(4, 5000);
  assert.deepEqual(ns(got), range(3, 6));
  assert.deepEqual(got.items.filter((m) => m.meta.replayed).map((m) => m.payload.n), [3, 4, 5]);
  assert.deepEqual(recoveries, []);
  assert.notEqual(JSON.parse(storage.getItem(key)).cursor, cursor, 'the cursor moved on');
});
