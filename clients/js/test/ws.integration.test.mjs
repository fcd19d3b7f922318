// The WebSocket transport against a real Herald: broadcast with acks, binary kind-4 frames,
// postgres_changes bindings, presence, auth failure, token refresh, and reconnects (a broken and a
// silently cut TCP path) with messages published during the outage: no loss, no duplicates.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { tokenExpiresAt } from '../herald.js';
import { startHerald } from './helpers/herald.mjs';
import { startProxy } from './helpers/proxy.mjs';
import { anonToken, expiredToken, token } from './helpers/tokens.mjs';
import { range, waitFor, Inbox } from './helpers/wait.mjs';
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
  const c = heraldClient(url, { token: anonToken(), transports: ['websocket'], ...options });
  clients.push(c);
  return c;
}

test('broadcast with ack between two clients; self is off by default; meta carries the position', async () => {
  const a = client();
  const b = client();
  const chA = a.channel('ws-basic');
  const chB = b.channel('ws-basic');
  const gotA = recordBroadcasts(chA);
  const gotB = recordBroadcasts(chB);
  chA.subscribe();
  chB.subscribe();
  await Promise.all([joined(chA), joined(chB)]);
  assert.equal(a.state.state, 'live');
  assert.equal(a.state.transport, 'websocket');
  const result = await chA.send('chat', { text: 'hi' });
  const [m] = await gotB.count(1, 3000);
  assert.equal(m.event, 'chat');
  assert.deepEqual(m.payload, { text: 'hi' });
  assert.equal(typeof m.meta.id, 'string');
  assert.equal(m.meta.offset, 1);
  assert.equal(typeof m.meta.epoch, 'string');
  assert.deepEqual(result, { status: 'ok', offset: 1, epoch: m.meta.epoch }, 'send resolves with where it was stored');
  assert.deepEqual(chB.position, { epoch: m.meta.epoch, offset: 1 });
  // Raw bytes from the client (kind 3) and from the HTTP API (kind 4), JSON over kind 4.
  await chA.send('bytes', new Uint8Array([7, 8, 9]));
  await server.publishSingle('ws-basic', 'bin', new Uint8Array([1, 2, 3]), 'application/octet-stream');
  await server.publishSingle('ws-basic', 'json', JSON.stringify({ k: 'v' }), 'application/json');
  const all = await gotB.count(4, 3000);
  assert.ok(all[1].payload instanceof Uint8Array);
  assert.deepEqual([...all[1].payload], [7, 8, 9]);
  assert.deepEqual([...all[2].payload], [1, 2, 3]);
  assert.deepEqual(all[3].payload, { k: 'v' });
  assert.deepEqual(all.map((x) => x.meta.offset), [1, 2, 3, 4]);
  // The sender sees the two HTTP-published messages (which may still be on their way), not its own.
  const seenByA = await gotA.count(2, 3000);
  assert.deepEqual(seenByA.map((x) => x.event), ['bin', 'json'], 'the sender saw only the HTTP-published messages');
  // An idempotency key sent twice is delivered once.
  await chA.send('once', { n: 1 }, { idempotencyKey: 'same-key' });
  await chA.send('once', { n: 1 }, { idempotencyKey: 'same-key' });
  await chA.send('after', { n: 2 });
  await gotB.find((x) => x.event === 'after', 3000);
  assert.equal(gotB.items.filter((x) => x.event === 'once').length, 1);
});

test('postgres_changes bindings are echoed with ids; the server says it has no database', async () => {
  const c = client();
  const ch = c.channel('ws-db');
  const systems = new Inbox('system messages');
  ch.on('system', (p) => systems.push(p));
  ch.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, () => {});
  ch.subscribe();
  await joined(ch);
  const [sys] = await systems.count(1, 3000);
  assert.equal(sys.extension, 'postgres_changes');
  assert.equal(sys.status, 'error');
  assert.equal(typeof ch._topic.joinedBindings[0].bindingId, 'number');
});

test('presence: track, join and leave between two clients', async () => {
  const a = client();
  const b = client();
  const chA = a.channel('ws-presence', { presence: { key: 'alice' } });
  const chB = b.channel('ws-presence');
  const joins = new Inbox('joins');
  const leaves = new Inbox('leaves');
  chB.on('presence', 'join', (e) => joins.push(e));
  chB.on('presence', 'leave', (e) => leaves.push(e));
  chB.subscribe();
  chA.subscribe();
  await Promise.all([joined(chA), joined(chB)]);
  await chA.track({ status: 'online' });
  const j = await joins.find((e) => e.key === 'alice', 3000);
  assert.equal(j.newPresences[0].status, 'online');
  assert.deepEqual(chB.presenceState().alice.map((m) => m.status), ['online']);
  await chA.track({ status: 'away' });
  await waitFor(() => chB.presenceState().alice?.[0]?.status === 'away', 3000, 'the changed state');
  assert.equal(chB.presenceState().alice.length, 1, 'the old meta left');
  a.disconnect();
  await leaves.find((e) => e.key === 'alice' && e.currentPresences.length === 0, 3000);
  assert.equal(chB.presenceState().alice, undefined);
});

test('an expired token ends in `failed` (the HTTP probe sees 401); a token callback recovers', async () => {
  const c = client(server.httpUrl, { token: expiredToken() });
  c.channel('ws-auth').subscribe();
  await waitState(c, 'failed', 5000);
  assert.match(c.state.reason, /unauthorized/);
  c.setToken(anonToken());
  await waitState(c, 'live', 5000, c.states.length);
  const reasons = [];
  const d = client(server.httpUrl, {
    token: undefined,
    getToken: (why) => {
      reasons.push(why);
      return anonToken();
    },
  });
  const ch = d.channel('ws-auth');
  ch.subscribe();
  await joined(ch);
  assert.deepEqual(reasons, ['connect']);
});

test('the token is refreshed before it expires and pushed to joined channels (no server close)', async () => {
  const reasons = [];
  const c = client(server.httpUrl, {
    token: undefined,
    refreshLeadMs: 60_000,
    getToken: (why) => {
      reasons.push(why);
      return token({ role: 'anon', ttl: 3 });
    },
  });
  const ch = c.channel('ws-refresh');
  const statuses = [];
  const systems = [];
  ch.on('status', (s) => statuses.push(s.status));
  ch.on('system', (p) => systems.push(p));
  const got = recordBroadcasts(ch);
  ch.subscribe();
  await joined(ch);
  const firstExpiry = tokenExpiresAt(c.token);
  // Past the first token's expiry: without the refresh Herald would have closed the channel.
  await waitFor(() => Date.now() > firstExpiry + 1200, 6000, 'the first token to expire');
  assert.ok(reasons.filter((r) => r === 'refresh').length >= 2, `refreshed before each expiry (${reasons})`);
  await server.publish([{ topic: 'ws-refresh', event: 'e', payload: { n: 1 } }]);
  await got.count(1, 3000);
  assert.deepEqual(statuses.filter((s) => s === 'errored'), [], 'the server never closed the channel');
  assert.deepEqual(systems, []);
  assert.equal(c.states.filter((s) => s.state === 'connecting').length, 1, 'one connection throughout');
});

test('a broken connection: messages published while disconnected arrive once, in order (recovery)', async () => {
  const proxy = await startProxy(server.port);
  proxies.push(proxy);
  const a = client(`http://127.0.0.1:${proxy.port}`);
  const b = client();
  const ch = a.channel('ws-break');
  const chB = b.channel('ws-break');
  const recoveries = [];
  ch.on('recovery', (e) => recoveries.push(e));
  const got = recordBroadcasts(ch);
  const gotB = recordBroadcasts(chB);
  ch.subscribe();
  chB.subscribe();
  await Promise.all([joined(ch), joined(chB)]);
  await server.publish(numbered('ws-break', 1, 20));
  await got.count(20, 3000);

  proxy.hold();
  const mark = a.states.length;
  assert.equal(proxy.break(), 1);
  await waitState(a, 'reconnecting', 3000, mark);
  await waitFor(() => proxy.connections.length >= 2, 3000, 'the reconnect attempt (held by the proxy)');
  await server.publish(numbered('ws-break', 21, 40));
  const queued = ch.send('from-a', { n: 'queued' });
  assert.equal(got.length, 20, 'nothing arrives while disconnected');
  proxy.release();
  await waitState(a, 'live', 5000, mark);
  assert.deepEqual(await queued, { status: 'ok', offset: 41, epoch: got.items[0].meta.epoch });
  await server.publish(numbered('ws-break', 41, 50));
  await got.count(50, 5000);
  assert.deepEqual(ns(got), range(1, 50));
  assert.deepEqual(got.items.filter((m) => m.meta.replayed).map((m) => m.payload.n), range(21, 40));
  assert.deepEqual(recoveries, []);
  await gotB.find((m) => m.event === 'from-a', 3000);
  assert.equal(gotB.items.filter((m) => m.event === 'from-a').length, 1);
  // Nothing more arrives later (no late duplicates).
  await server.publish(numbered('ws-break', 51, 51));
  await got.count(51, 3000);
  assert.deepEqual(ns(got), range(1, 51));
});

test('a silently cut connection is detected by heartbeats and recovered without loss', async () => {
  const proxy = await startProxy(server.port);
  proxies.push(proxy);
  const a = client(`http://127.0.0.1:${proxy.port}`, { heartbeatIntervalMs: 150, heartbeatTimeoutMs: 250 });
  const ch = a.channel('ws-cut');
  const got = recordBroadcasts(ch);
  ch.subscribe();
  await joined(ch);
  await server.publish(numbered('ws-cut', 1, 5));
  await got.count(5, 3000);
  const mark = a.states.length;
  assert.equal(proxy.cut(), 1);
  // Published into the dead path: the server hands them to a socket that will never deliver.
  await server.publish(numbered('ws-cut', 6, 15));
  await waitState(a, 'reconnecting', 3000, mark);
  assert.match(a.states.find((s, i) => i >= mark && s.state === 'reconnecting').reason, /heartbeat timeout/);
  await waitState(a, 'live', 5000, mark);
  await server.publish(numbered('ws-cut', 16, 20));
  await got.count(20, 5000);
  assert.deepEqual(ns(got), range(1, 20));
});

test('recovered: false when the gap is larger than the server replays; live messages continue', async () => {
  const small = await startHerald({ env: { HERALD_MAX_REPLAY_MESSAGES: '5' } });
  const proxy = await startProxy(small.port);
  proxies.push(proxy);
  try {
    const a = client(`http://127.0.0.1:${proxy.port}`);
    const ch = a.channel('ws-gap');
    const recoveries = new Inbox('recoveries');
    ch.on('recovery', (e) => recoveries.push(e));
    const got = recordBroadcasts(ch);
    ch.subscribe();
    await joined(ch);
    await small.publish(numbered('ws-gap', 1, 3));
    await got.count(3, 3000);
    proxy.hold();
    const mark = a.states.length;
    proxy.break();
    await waitState(a, 'reconnecting', 3000, mark);
    await small.publish(numbered('ws-gap', 4, 13));
    proxy.release();
    const [r] = await recoveries.count(1, 5000);
    assert.equal(r.recovered, false);
    assert.equal(r.topic, 'ws-gap');
    await small.publish(numbered('ws-gap', 14, 15));
    await got.count(5, 3000);
    assert.deepEqual(ns(got), [1, 2, 3, 14, 15], 'nothing partial was replayed');
    a.disconnect();
  } finally {
    await small.stop();
  }
});

/** A WebSocket class that records the text frames the client sends (and the sockets it opened). */
function recordingWebSocket() {
  const sent = [];
  class RecordingWebSocket extends WebSocket {
    send(data, ...rest) {
      if (typeof data === 'string') sent.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  }
  const joins = (topic) => sent.filter((f) => f[3] === 'phx_join' && f[2] === `realtime:${topic}`).map((f) => f[4].config.broadcast);
  return { RecordingWebSocket, joins };
}

/** Breaks every connection of `proxy` and holds the next ones; returns the function that lets them through. */
async function outage(proxy, c, ...channels) {
  proxy.hold();
  const mark = c.states.length;
  const before = proxy.connections.length;
  // Statuses each channel goes through from here on: the resume waits for its rejoin.
  const seen = channels.map((ch) => {
    const statuses = [];
    ch.on('status', (e) => statuses.push(e.status));
    return statuses;
  });
  assert.ok(proxy.break() >= 1);
  await waitState(c, 'reconnecting', 3000, mark);
  await waitFor(() => proxy.connections.length > before, 3000, 'the reconnect attempt (held by the proxy)');
  return async () => {
    proxy.release();
    await waitState(c, 'live', 5000, mark);
    await waitFor(() => seen.every((s) => s.includes('joined')), 5000, 'the channels to rejoin');
  };
}

test('self:false: after a reconnect the replay does not hand the sender its own messages', async () => {
  const proxy = await startProxy(server.port);
  proxies.push(proxy);
  const a = client(`http://127.0.0.1:${proxy.port}`);
  const b = client();
  const chA = a.channel('ws-own');
  const chB = b.channel('ws-own');
  const gotA = recordBroadcasts(chA);
  const gotB = recordBroadcasts(chB);
  const recoveries = [];
  chA.on('recovery', (e) => recoveries.push(e));
  chA.subscribe();
  chB.subscribe();
  await Promise.all([joined(chA), joined(chB)]);
  const mine = [await chA.send('mine', { n: 1 }), await chA.send('mine', { n: 2 })];
  assert.deepEqual(mine.map((r) => r.offset), [1, 2]);
  await gotB.count(2, 3000);
  assert.equal(gotA.length, 0, 'self: false leaves them out of live delivery');

  const resume = await outage(proxy, a, chA);
  await chB.send('theirs', { n: 3 });
  await chB.send('theirs', { n: 4 });
  await resume();
  await chB.send('theirs', { n: 5 });
  await gotA.count(3, 5000);
  assert.deepEqual(gotA.items.map((m) => [m.event, m.payload.n, m.meta.replayed === true]), [
    ['theirs', 3, true],
    ['theirs', 4, true],
    ['theirs', 5, false],
  ]);
  assert.deepEqual(chA.position, { epoch: mine[0].epoch, offset: 5 });
  assert.deepEqual(recoveries, []);
  assert.equal(chA.stats.delivered, 3);
});

test('history: the first join replays recent messages; rejoins recover from the last one seen', async () => {
  await server.publish(numbered('ws-history', 1, 3));
  const mark = Date.now();
  await waitFor(() => Date.now() > mark + 1, 1000, 'the clock to move past the first messages');
  await server.publish(numbered('ws-history', 4, 10));

  // Only `since`: the messages after it (more than 3, fewer than Herald's default limit).
  const s = client(server.httpUrl);
  const chS = s.channel('ws-history', { history: { since: mark + 1 } });
  const gotS = recordBroadcasts(chS);
  chS.subscribe();
  await joined(chS);
  await gotS.count(7, 3000);

  // `limit`: the newest ones; then an outage, and the rejoin recovers instead of replaying again.
  const proxy = await startProxy(server.port);
  proxies.push(proxy);
  const { RecordingWebSocket, joins } = recordingWebSocket();
  const a = client(`http://127.0.0.1:${proxy.port}`, { WebSocket: RecordingWebSocket });
  const ch = a.channel('ws-history', { history: { since: Date.now() - 60_000, limit: 4 } });
  const got = recordBroadcasts(ch);
  const recoveries = [];
  ch.on('recovery', (e) => recoveries.push(e));
  ch.subscribe();
  await joined(ch);
  await got.count(4, 3000);
  assert.deepEqual(ns(got), [7, 8, 9, 10]);
  assert.ok(got.items.every((m) => m.meta.replayed === true));
  const epoch = got.items[0].meta.epoch;
  assert.deepEqual(ch.position, { epoch, offset: 10 });
  assert.equal(joins('ws-history')[0].recover, undefined, 'replay instead of recover');
  assert.equal(typeof joins('ws-history')[0].replay.since, 'number');
  assert.equal(joins('ws-history')[0].replay.limit, 4);

  const resume = await outage(proxy, a, ch);
  await server.publish(numbered('ws-history', 11, 13));
  await resume();
  await server.publish(numbered('ws-history', 14, 14));
  await got.count(8, 5000);
  assert.deepEqual(ns(got), range(7, 14));
  assert.deepEqual(got.items.filter((m) => m.meta.replayed).map((m) => m.payload.n), [7, 8, 9, 10, 11, 12, 13]);
  assert.deepEqual(joins('ws-history')[1], { self: false, ack: true, recover: { epoch, offset: 10 } });
  assert.deepEqual(recoveries, []);
  await gotS.count(11, 3000);
  assert.deepEqual(ns(gotS), range(4, 14), 'since: only what came after it, then live');
  assert.deepEqual(gotS.items.filter((m) => m.meta.replayed).map((m) => m.payload.n), range(4, 10));
});

test('history on an empty channel: messages published during an outage are recovered', async () => {
  const proxy = await startProxy(server.port);
  proxies.push(proxy);
  const { RecordingWebSocket, joins } = recordingWebSocket();
  const a = client(`http://127.0.0.1:${proxy.port}`, { WebSocket: RecordingWebSocket });
  const ch = a.channel('ws-history-empty', { history: { since: Date.now() - 60_000, limit: 10 } });
  const got = recordBroadcasts(ch);
  const recoveries = [];
  ch.on('recovery', (e) => recoveries.push(e));
  ch.subscribe();
  await joined(ch);
  assert.equal(ch.position, null, 'nothing replayed: no message position yet');

  // Nothing replayed and nothing live yet: what is published during an outage still comes back.
  let resume = await outage(proxy, a, ch);
  await server.publish(numbered('ws-history-empty', 1, 1));
  await resume();
  await got.count(1, 3000);
  assert.equal(joins('ws-history-empty')[1].recover.offset, 0, 'recovered from where the replay left the channel');
  assert.equal(got.items[0].meta.replayed, true);

  resume = await outage(proxy, a, ch);
  await server.publish(numbered('ws-history-empty', 2, 3));
  await resume();
  await got.count(3, 5000);
  assert.deepEqual(ns(got), [1, 2, 3]);
  assert.deepEqual(joins('ws-history-empty')[2].recover, { epoch: got.items[0].meta.epoch, offset: 1 });
  assert.deepEqual(recoveries, []);
});

test('self:false, the ack lost with the connection: the resent message is recognised in the replay', async () => {
  const proxy = await startProxy(server.port);
  proxies.push(proxy);
  const a = client(`http://127.0.0.1:${proxy.port}`);
  const b = client();
  const chA = a.channel('ws-own-lost-ack');
  const chB = b.channel('ws-own-lost-ack');
  const gotA = recordBroadcasts(chA);
  const gotB = recordBroadcasts(chB);
  chA.subscribe();
  chB.subscribe();
  await Promise.all([joined(chA), joined(chB)]);
  await chB.send('theirs', { n: 1 });
  await gotA.count(1, 3000);

  // Herald gets and stores A's message, but nothing it sends back reaches A.
  assert.equal(proxy.mute(), 1);
  let settled = null;
  const sent = chA.send('mine', { n: 2 }, { idempotencyKey: 'lost-ack' }).then((r) => {
    settled = r;
    return r;
  });
  const stored = await gotB.find((m) => m.event === 'mine', 3000);
  await chB.send('theirs', { n: 3 });
  assert.equal(settled, null, 'the ack did not arrive');

  const resume = await outage(proxy, a, chA);
  await chB.send('theirs', { n: 4 });
  await resume();
  assert.deepEqual(await sent, { status: 'ok', offset: stored.meta.offset, epoch: stored.meta.epoch }, 'acked with the stored copy’s position');
  await chB.send('theirs', { n: 5 });
  await gotA.count(4, 5000);
  assert.deepEqual(gotA.items.map((m) => [m.event, m.payload.n]), [
    ['theirs', 1],
    ['theirs', 3],
    ['theirs', 4],
    ['theirs', 5],
  ]);
  assert.equal(gotB.items.filter((m) => m.event === 'mine').length, 1, 'stored and delivered once');
});
