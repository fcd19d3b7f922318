// Channels against a scripted WebSocket: join payload, recovery and the `recovery` event,
// de-duplication, sends with acks across reconnects, presence, postgres_changes, shared handles.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Herald } from '../herald.js';
import { FakeClock, fakeFetch, fakeWebSocketClass, flush } from './helpers/fakes.mjs';
import { signJwt } from './helpers/tokens.mjs';

function setup(extra = {}) {
  const clock = new FakeClock();
  const WS = fakeWebSocketClass();
  const client = new Herald('https://herald.test/base', {
    token: signJwt({ role: 'anon', exp: Math.floor(clock.time / 1000) + 3600 }),
    WebSocket: WS,
    transports: ['websocket'],
    fetch: fakeFetch(null),
    clock,
    random: () => 0.5,
    window: null,
    document: null,
    storage: null,
    logger: () => {},
    ...extra,
  });
  return { clock, WS, client };
}

/** Connects, opens the socket and returns it. */
async function live(env) {
  env.client.connect();
  await flush();
  env.WS.last.open();
  return env.WS.last;
}

const bc = (event, payload, meta) => ({ type: 'broadcast', event, payload, meta });

test('join payload: recover from the empty position first, ack, self, presence, bindings, token', async () => {
  const env = setup();
  const room = env.client.channel('room1', { broadcast: { self: true }, presence: { key: 'alice' }, private: true });
  room.subscribe();
  const ws = await live(env);
  assert.equal(new URL(ws.url).pathname, '/base/socket/websocket');
  assert.equal(new URL(ws.url).protocol, 'wss:');
  const [join] = ws.framesOf('phx_join');
  assert.equal(join[0], join[1], 'join_ref = ref');
  assert.equal(join[2], 'realtime:room1');
  assert.deepEqual(join[4], {
    config: {
      broadcast: { self: true, ack: true, recover: { epoch: '', offset: 0 } },
      presence: { enabled: true, key: 'alice' },
      postgres_changes: [],
      private: true,
    },
    access_token: env.client.token,
  });
  env.client.disconnect();
});

test('recovery: rejoin from the last position; recovered:false on a rejoin (not the first join) is reported', async () => {
  const env = setup();
  const room = env.client.channel('room1');
  const got = [];
  const recoveries = [];
  room.on('broadcast', '*', (m) => got.push(m.payload.n));
  room.on('recovery', (e) => recoveries.push(e));
  room.subscribe();
  let ws = await live(env);
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e1', offset: 5 } });
  assert.equal(room.status, 'joined');
  assert.deepEqual(recoveries, [], 'the first join only learns the start position');
  assert.deepEqual(room.position, { epoch: 'e1', offset: 5 });
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 6 }, { id: 'i6', offset: 6, epoch: 'e1' })]);
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 7 }, { id: 'i7', offset: 7, epoch: 'e1' })]);
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 7 }, { id: 'i7', offset: 7, epoch: 'e1' })]);
  assert.deepEqual(got, [6, 7]);

  // Connection lost: the rejoin asks for what came after offset 7.
  ws.drop();
  await env.clock.advance(1000);
  ws = env.WS.last;
  ws.open();
  const rejoin = ws.framesOf('phx_join').pop();
  assert.deepEqual(rejoin[4].config.broadcast.recover, { epoch: 'e1', offset: 7 });
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 9 } });
  for (const n of [7, 8, 9]) {
    ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n }, { id: `i${n}`, offset: n, epoch: 'e1', replayed: true })]);
  }
  assert.deepEqual(got, [6, 7, 8, 9], 'the replay overlap is dropped');
  assert.deepEqual(recoveries, []);
  assert.equal(room.stats.duplicates, 2);

  // Again, but the server cannot fill the gap.
  ws.drop();
  await env.clock.advance(1000);
  ws = env.WS.last;
  ws.open();
  assert.deepEqual(ws.framesOf('phx_join').pop()[4].config.broadcast.recover, { epoch: 'e1', offset: 9 });
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e2', offset: 3 } });
  assert.equal(recoveries.length, 1);
  assert.deepEqual(recoveries[0], {
    recovered: false,
    topic: 'room1',
    transport: 'websocket',
    reason: 'the server could not replay the missed messages',
  });
  assert.deepEqual(room.position, { epoch: 'e2', offset: 3 });
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 100 }, { id: 'x', offset: 4, epoch: 'e2' })]);
  assert.deepEqual(got, [6, 7, 8, 9, 100]);
  env.client.disconnect();
});

test('binary kind-4 broadcasts reach the channel and are de-duplicated like text ones', async () => {
  const env = setup();
  const room = env.client.channel('r');
  const got = [];
  room.on('broadcast', 'bin', (m) => got.push(m.payload));
  room.subscribe();
  const ws = await live(env);
  ws.replyJoin('r', { recovery: { recovered: false, epoch: 'e', offset: 0 } });
  const meta = Buffer.from('{"id":"b1","offset":1,"epoch":"e"}');
  const frame = Buffer.concat([Buffer.from([4, 10, 3, meta.length, 0]), Buffer.from('realtime:r'), Buffer.from('bin'), meta, Buffer.from([1, 2, 3])]);
  ws.receiveBinary(frame);
  ws.receiveBinary(frame);
  assert.equal(got.length, 1);
  assert.deepEqual([...got[0]], [1, 2, 3]);
  env.client.disconnect();
});

test('send: queued until joined, resent with the same idempotency key after a reconnect, resolved by the ack', async () => {
  const env = setup();
  const room = env.client.channel('room1');
  room.subscribe();
  const sent = room.send('chat', { text: 'hi' }, { idempotencyKey: 'k-1' });
  let settled = false;
  sent.then(() => {
    settled = true;
  });
  let ws = await live(env);
  assert.equal(ws.framesOf('broadcast').length, 0, 'nothing before the join reply');
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e', offset: 0 } });
  const [first] = ws.framesOf('broadcast');
  assert.deepEqual(first[4], { type: 'broadcast', event: 'chat', payload: { text: 'hi' }, meta: { idempotency_key: 'k-1' } });
  ws.drop(); // before the ack
  await env.clock.advance(1000);
  ws = env.WS.last;
  ws.open();
  const join = ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e', offset: 0 } });
  const [again] = ws.framesOf('broadcast');
  assert.equal(again[4].meta.idempotency_key, 'k-1');
  assert.equal(again[0], join[0]);
  await flush();
  assert.equal(settled, false);
  ws.receive([again[0], again[1], 'realtime:room1', 'phx_reply', { status: 'ok', response: {} }]);
  assert.deepEqual(await sent, { status: 'ok' });

  const refused = room.send('chat', { big: true });
  const push = ws.framesOf('broadcast').pop();
  ws.receive([push[0], push[1], 'realtime:room1', 'phx_reply', { status: 'error', response: { reason: 'payload_size_exceeded' } }]);
  await assert.rejects(refused, /payload_size_exceeded/);

  const slow = room.send('chat', {}, { timeoutMs: 2000 });
  const expectation = assert.rejects(slow, /timed out after 2000 ms/);
  await env.clock.advance(2000);
  await expectation;
  env.client.disconnect();
});

test('handles of one name share one join; the last unsubscribe leaves on the next tick', async () => {
  const env = setup();
  const a = env.client.channel('room1');
  const b = env.client.channel('room1');
  a.subscribe();
  b.subscribe();
  const ws = await live(env);
  assert.equal(ws.framesOf('phx_join').length, 1);
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e', offset: 0 } });
  const gotA = [];
  const gotB = [];
  a.on('broadcast', 'x', (m) => gotA.push(m.payload));
  b.on('broadcast', '*', (m) => gotB.push(m.payload));
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('x', 1, { id: '1', offset: 1, epoch: 'e' })]);
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('y', 2, { id: '2', offset: 2, epoch: 'e' })]);
  assert.deepEqual(gotA, [1]);
  assert.deepEqual(gotB, [1, 2]);
  a.unsubscribe();
  await env.clock.advance(0);
  assert.equal(ws.framesOf('phx_leave').length, 0, 'b still uses it');
  // Unmount and mount again in the same tick (StrictMode): no leave, no second join.
  b.unsubscribe();
  const c = env.client.channel('room1');
  c.subscribe();
  await env.clock.advance(0);
  assert.equal(ws.framesOf('phx_leave').length, 0);
  assert.equal(ws.framesOf('phx_join').length, 1);
  assert.equal(c.status, 'joined');
  await c.ready();
  assert.deepEqual(env.client.channels().map((i) => [i.name, i.handles]), [['room1', 1]]);
  c.unsubscribe();
  await env.clock.advance(0);
  const [leave] = ws.framesOf('phx_leave');
  assert.equal(leave[0], ws.framesOf('phx_join')[0][0]);
  assert.deepEqual(env.client.channels(), []);
  env.client.disconnect();
});

test('presence: a listener enables it; state then diffs; track is sent and tracked again after a rejoin', async () => {
  const env = setup();
  const room = env.client.channel('room1');
  const events = [];
  room.on('presence', 'join', (e) => events.push(['join', e.key]));
  room.on('presence', 'leave', (e) => events.push(['leave', e.key]));
  room.on('presence', 'sync', () => events.push(['sync']));
  room.subscribe();
  let ws = await live(env);
  const [join] = ws.framesOf('phx_join');
  assert.equal(join[4].config.presence.enabled, true);
  ws.replyJoin('room1', {});
  ws.receive([join[0], null, 'realtime:room1', 'presence_state', { bob: { metas: [{ phx_ref: 'n-1', online_at: 1 }] } }]);
  assert.deepEqual(events, [['join', 'bob'], ['sync']]);
  const tracked = room.track({ name: 'alice' });
  const [push] = ws.framesOf('presence');
  assert.deepEqual(push[4], { type: 'presence', event: 'track', payload: { name: 'alice' } });
  ws.receive([push[0], push[1], 'realtime:room1', 'phx_reply', { status: 'ok', response: {} }]);
  await tracked;
  ws.receive([join[0], null, 'realtime:room1', 'presence_diff', { joins: { me: { metas: [{ phx_ref: 'n-2', name: 'alice' }] } }, leaves: { bob: { metas: [{ phx_ref: 'n-1' }] } } }]);
  assert.deepEqual(events.slice(2), [['join', 'me'], ['leave', 'bob'], ['sync']]);
  assert.deepEqual(Object.keys(room.presenceState()), ['me']);
  // A diff for an old join is ignored.
  ws.receive(['old', null, 'realtime:room1', 'presence_diff', { joins: { ghost: { metas: [{ phx_ref: 'g' }] } }, leaves: {} }]);
  assert.equal(room.presenceState().ghost, undefined);
  ws.drop();
  await env.clock.advance(1000);
  ws = env.WS.last;
  ws.open();
  ws.replyJoin('room1', {});
  const [retrack] = ws.framesOf('presence');
  assert.deepEqual(retrack[4].payload, { name: 'alice' });
  env.client.disconnect();
});

test('a later handle with a presence key gives the shared join its key (rejoining)', async () => {
  const env = setup();
  const plain = env.client.channel('room1');
  plain.subscribe();
  const ws = await live(env);
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e', offset: 2 } });
  const keyed = env.client.channel('room1', { presence: { key: 'alice' } });
  keyed.subscribe();
  const joins = ws.framesOf('phx_join');
  assert.equal(joins.length, 2);
  assert.deepEqual(joins[1][4].config.presence, { enabled: true, key: 'alice' });
  assert.deepEqual(joins[1][4].config.broadcast.recover, { epoch: 'e', offset: 2 }, 'the rejoin keeps the position');
  env.client.disconnect();
});

test('postgres_changes: bindings go in the join, the reply ids route changes, a new binding rejoins', async () => {
  const env = setup();
  const room = env.client.channel('db');
  const todos = [];
  const users = [];
  room.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (c) => todos.push(c));
  room.on('postgres_changes', { schema: 'public', table: 'users' }, (c) => users.push(c));
  room.subscribe();
  let ws = await live(env);
  const [join] = ws.framesOf('phx_join');
  assert.deepEqual(join[4].config.postgres_changes, [
    { event: 'INSERT', schema: 'public', table: 'todos' },
    { event: '*', schema: 'public', table: 'users' },
  ]);
  ws.receive([join[0], join[1], 'realtime:db', 'phx_reply', {
    status: 'ok',
    response: { postgres_changes: [{ id: 11, event: 'INSERT', schema: 'public', table: 'todos' }, { id: 12, event: '*', schema: 'public', table: 'users' }] },
  }]);
  ws.receive([join[0], null, 'realtime:db', 'postgres_changes', { ids: [12], data: { type: 'UPDATE', table: 'users', record: { id: 1 } } }]);
  ws.receive([join[0], null, 'realtime:db', 'postgres_changes', { ids: [11, 12], data: { type: 'INSERT', table: 'todos' } }]);
  assert.equal(todos.length, 1);
  assert.equal(users.length, 2);
  assert.deepEqual(users[0], { type: 'UPDATE', table: 'users', record: { id: 1 } });
  room.on('postgres_changes', { event: 'DELETE', schema: 'public', table: 'todos' }, () => {});
  assert.equal(ws.framesOf('phx_join').length, 2, 'rejoined with the new binding');
  assert.equal(ws.framesOf('phx_join')[1][4].config.postgres_changes.length, 3);
  env.client.disconnect();
});

test('postgres_changes: positions per table are remembered, de-duplicated and asked for on rejoin', async () => {
  const env = setup();
  const room = env.client.channel('db');
  const got = [];
  const recoveries = [];
  room.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'todos' }, (c) => got.push(c.record.id));
  room.on('recovery', (e) => recoveries.push(e));
  room.subscribe();
  let ws = await live(env);
  let [join] = ws.framesOf('phx_join');
  assert.deepEqual(join[4].config.postgres_changes_options, { recover: {} });
  const ok = (j, recovery) => {
    ws.receive([j[0], j[1], 'realtime:db', 'phx_reply', {
      status: 'ok', response: { postgres_changes: [{ id: 7, event: 'INSERT', schema: 'public', table: 'todos' }] },
    }]);
    ws.receive([j[0], null, 'realtime:db', 'system', {
      extension: 'postgres_changes', status: 'ok', message: 'Subscribed to PostgreSQL', channel: 'db', recovery,
    }]);
  };
  const change = (id, offset, epoch = 'p1', replayed = false) => ws.receive([null, null, 'realtime:db', 'postgres_changes', {
    ids: [7], data: { type: 'INSERT', table: 'todos', record: { id }, position: { log: 'public.todos', epoch, offset }, ...(replayed ? { replayed } : {}) },
  }]);
  ok(join, { 'public.todos': { recovered: true, epoch: 'p1', offset: 4 } });
  change(1, 5);
  change(2, 6);
  change(2, 6);
  assert.deepEqual(got, [1, 2], 'a repeated position is dropped');

  ws.drop();
  await env.clock.advance(1000);
  ws = env.WS.last;
  ws.open();
  [join] = ws.framesOf('phx_join').slice(-1);
  assert.deepEqual(join[4].config.postgres_changes_options, { recover: { 'public.todos': { epoch: 'p1', offset: 6 } } });
  ok(join, { 'public.todos': { recovered: true, epoch: 'p1', offset: 7 } });
  change(3, 7, 'p1', true);
  assert.deepEqual(got, [1, 2, 3]);
  assert.deepEqual(recoveries, []);

  ws.drop();
  await env.clock.advance(1000);
  ws = env.WS.last;
  ws.open();
  [join] = ws.framesOf('phx_join').slice(-1);
  assert.deepEqual(join[4].config.postgres_changes_options.recover['public.todos'], { epoch: 'p1', offset: 7 });
  ok(join, { 'public.todos': { recovered: false, epoch: 'p2', offset: 1 } });
  assert.equal(recoveries.length, 1);
  assert.equal(recoveries[0].table, 'public.todos');
  assert.equal(recoveries[0].recovered, false);
  change(9, 2, 'p2');
  assert.deepEqual(got, [1, 2, 3, 9], 'changes of the new epoch are delivered');
  env.client.disconnect();
});

test('system messages reach listeners; a refused join is reported and retried with backoff', async () => {
  const env = setup();
  const room = env.client.channel('room1');
  const systems = [];
  const statuses = [];
  room.on('system', (p) => systems.push(p));
  room.on('status', (s) => statuses.push(s));
  room.subscribe();
  const ws = await live(env);
  const [join] = ws.framesOf('phx_join');
  ws.receive([join[0], join[1], 'realtime:room1', 'phx_reply', { status: 'error', response: { reason: 'ChannelRateLimitReached: Too many channels' } }]);
  assert.deepEqual(statuses.pop(), { status: 'errored', reason: 'ChannelRateLimitReached: Too many channels' });
  await env.clock.advance(250);
  assert.equal(ws.framesOf('phx_join').length, 2);
  ws.replyJoin('room1', {});
  ws.receive([ws.framesOf('phx_join')[1][0], null, 'realtime:room1', 'system', { extension: 'postgres_changes', status: 'error', message: 'x' }]);
  assert.equal(systems.length, 1);
  assert.equal(room.status, 'joined');
  env.client.disconnect();
});

/** Drops the socket, lets the reconnect timer fire and opens the next one. */
async function reconnect(env) {
  env.WS.last.drop();
  await env.clock.advance(1000);
  const ws = env.WS.last;
  ws.open();
  return ws;
}

const replayed = (n, offset, epoch = 'e1') => bc('e', { n }, { id: `i${n}`, offset, epoch, replayed: true });

test('history: the first join asks replay (not recover); replayed messages give the position rejoins recover from', async () => {
  const env = setup();
  const since = Date.UTC(2029, 11, 31, 23, 58);
  const room = env.client.channel('room1', { history: { since, limit: 50 } });
  const got = [];
  const recoveries = [];
  room.on('broadcast', '*', (m) => got.push([m.payload.n, m.meta.replayed === true]));
  room.on('recovery', (e) => recoveries.push(e));
  room.subscribe();
  let ws = await live(env);
  const [join] = ws.framesOf('phx_join');
  assert.deepEqual(join[4].config.broadcast, { self: false, ack: true, replay: { since, limit: 50 } });
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 13 } }); // the position at the replay
  assert.equal(room.position, null);
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(1, 11)]);
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(2, 12)]);
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 3 }, { id: 'i3', offset: 13, epoch: 'e1' })]);
  assert.deepEqual(got, [[1, true], [2, true], [3, false]]);
  assert.deepEqual(room.position, { epoch: 'e1', offset: 13 });

  ws = await reconnect(env);
  const rejoin = ws.framesOf('phx_join').pop();
  assert.deepEqual(rejoin[4].config.broadcast, { self: false, ack: true, recover: { epoch: 'e1', offset: 13 } }, 'no replay on a rejoin');
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 14 } });
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(4, 14)]);
  assert.deepEqual(got.map(([n]) => n), [1, 2, 3, 4]);

  // And every later rejoin recovers too.
  ws = await reconnect(env);
  assert.deepEqual(ws.framesOf('phx_join').pop()[4].config.broadcast.recover, { epoch: 'e1', offset: 14 });
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e1', offset: 900 } });
  assert.equal(recoveries.length, 1, 'a real gap is still reported');
  env.client.disconnect();
});

test('history: an empty replay still gives the position, so the rejoin recovers what was missed', async () => {
  const env = setup();
  const room = env.client.channel('room1', { history: { since: 5, limit: 10 } });
  const recoveries = [];
  const got = [];
  room.on('recovery', (e) => recoveries.push(e));
  room.on('broadcast', '*', (m) => got.push(m.payload.n));
  room.subscribe();
  let ws = await live(env);
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 7 } });
  ws = await reconnect(env);
  assert.deepEqual(ws.framesOf('phx_join').pop()[4].config.broadcast, { self: false, ack: true, recover: { epoch: 'e1', offset: 7 } });
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 8 } });
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(8, 8)]);
  assert.deepEqual(got, [8]);
  assert.deepEqual(recoveries, []);
  env.client.disconnect();
});

test('history: a replay reply without a position leaves none; the rejoin learns it without a recovery event', async () => {
  const env = setup();
  const room = env.client.channel('room1', { history: { since: 5, limit: 5000 } });
  const recoveries = [];
  const got = [];
  room.on('recovery', (e) => recoveries.push(e));
  room.on('broadcast', '*', (m) => got.push(m.payload.n));
  room.subscribe();
  let ws = await live(env);
  assert.deepEqual(ws.framesOf('phx_join')[0][4].config.broadcast.replay, { since: 5, limit: 1000 }, 'limit clamped to what Herald serves');
  ws.replyJoin('room1', {});
  assert.equal(room.position, null);

  ws = await reconnect(env);
  assert.deepEqual(ws.framesOf('phx_join').pop()[4].config.broadcast, { self: false, ack: true, recover: { epoch: '', offset: 0 } });
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e1', offset: 7 } });
  assert.deepEqual(recoveries, [], 'nothing to recover from: no recovered:false');
  assert.deepEqual(room.position, { epoch: 'e1', offset: 7 });
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 8 }, { id: 'i8', offset: 8, epoch: 'e1' })]);
  assert.deepEqual(got, [8]);

  ws = await reconnect(env);
  assert.deepEqual(ws.framesOf('phx_join').pop()[4].config.broadcast.recover, { epoch: 'e1', offset: 8 });
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e2', offset: 1 } });
  assert.equal(recoveries.length, 1, 'with a position, a failed recovery is reported');
  env.client.disconnect();
});

test('history: a channel without history still reports recovered:false on rejoins', async () => {
  const env = setup();
  const room = env.client.channel('room1', { history: {} });
  const recoveries = [];
  room.on('recovery', (e) => recoveries.push(e));
  room.subscribe();
  let ws = await live(env);
  assert.deepEqual(ws.framesOf('phx_join')[0][4].config.broadcast.replay, { since: 0 });
  ws.replyJoin('room1', {});
  ws = await reconnect(env);
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: null, offset: 0 } });
  assert.equal(recoveries.length, 1, 'no history: messages sent while away are lost');
  env.client.disconnect();
});

test('history: asked again when the first join got no answer; handles share the first one’s option', async () => {
  const env = setup();
  const a = env.client.channel('room1', { history: { since: 1000 } });
  const b = env.client.channel('room1', { history: { since: 2000 } });
  a.subscribe();
  b.subscribe();
  let ws = await live(env);
  assert.deepEqual(ws.framesOf('phx_join')[0][4].config.broadcast.replay, { since: 1000 });
  ws = await reconnect(env); // dropped before the reply
  assert.deepEqual(ws.framesOf('phx_join').pop()[4].config.broadcast.replay, { since: 1000 });
  ws.replyJoin('room1', {});
  const plain = env.client.channel('room2');
  plain.subscribe();
  assert.deepEqual(ws.framesOf('phx_join').pop()[4].config.broadcast, { self: false, ack: true, recover: { epoch: '', offset: 0 } }, 'no option: as before');
  env.client.disconnect();
});

test('send resolves with the stored position; with self:false the own message is left out of a replay', async () => {
  const env = setup();
  const room = env.client.channel('room1');
  const got = [];
  room.on('broadcast', '*', (m) => got.push(m.payload.n));
  room.subscribe();
  let ws = await live(env);
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e1', offset: 4 } });
  const sent = room.send('e', { n: 5 });
  const push = ws.framesOf('broadcast').pop();
  ws.receive([push[0], push[1], 'realtime:room1', 'phx_reply', { status: 'ok', response: { offset: 5, epoch: 'e1' } }]);
  assert.deepEqual(await sent, { status: 'ok', offset: 5, epoch: 'e1' });
  const noHistory = room.send('e', { n: 0 });
  const push2 = ws.framesOf('broadcast').pop();
  ws.receive([push2[0], push2[1], 'realtime:room1', 'phx_reply', { status: 'ok', response: {} }]);
  assert.deepEqual(await noHistory, { status: 'ok' }, 'no position without history');

  ws = await reconnect(env);
  assert.deepEqual(ws.framesOf('phx_join').pop()[4].config.broadcast.recover, { epoch: 'e1', offset: 4 });
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 6 } });
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(5, 5)]); // this client's own
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(6, 6)]);
  assert.deepEqual(got, [6]);
  assert.deepEqual(room.position, { epoch: 'e1', offset: 6 }, 'the own message still moves the position');
  assert.equal(room.stats.delivered, 1);
  env.client.disconnect();
});

test('self:true: the own message is delivered once, live, and not again in a replay', async () => {
  const env = setup();
  const room = env.client.channel('room1', { broadcast: { self: true } });
  const got = [];
  room.on('broadcast', '*', (m) => got.push(m.payload.n));
  room.subscribe();
  let ws = await live(env);
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e1', offset: 4 } });
  const sent = room.send('e', { n: 5 });
  const push = ws.framesOf('broadcast').pop();
  // Herald delivers the message to its sender before it acks it.
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 5 }, { id: 'i5', offset: 5, epoch: 'e1' })]);
  ws.receive([push[0], push[1], 'realtime:room1', 'phx_reply', { status: 'ok', response: { offset: 5, epoch: 'e1' } }]);
  assert.deepEqual(await sent, { status: 'ok', offset: 5, epoch: 'e1' });
  ws = await reconnect(env);
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 6 } });
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(5, 5)]);
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(6, 6)]);
  assert.deepEqual(got, [5, 6]);
  env.client.disconnect();
});

test('self:false, ack lost in the drop: what arrives waits for the resent ack, then comes without the own message', async () => {
  const env = setup();
  const room = env.client.channel('room1');
  const got = [];
  room.on('broadcast', '*', (m) => got.push(m.payload.n));
  room.subscribe();
  let ws = await live(env);
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e1', offset: 4 } });
  const sent = room.send('e', { n: 5 }, { idempotencyKey: 'k5' });
  assert.equal(ws.framesOf('broadcast').length, 1, 'written');
  ws = await reconnect(env); // Herald stored it as offset 5, but its ack never arrived
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 6 } });
  const [resent] = ws.framesOf('broadcast');
  assert.equal(resent[4].meta.idempotency_key, 'k5');
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(5, 5)]);
  ws.receive([null, null, 'realtime:room1', 'broadcast', replayed(6, 6)]);
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 7 }, { id: 'i7', offset: 7, epoch: 'e1' })]);
  assert.deepEqual(got, [], 'held until the own message can be told apart');
  assert.deepEqual(room.position, { epoch: 'e1', offset: 7 }, 'held messages count as seen');
  // Herald recognises the key and acks with the first copy's position.
  ws.receive([resent[0], resent[1], 'realtime:room1', 'phx_reply', { status: 'ok', response: { offset: 5, epoch: 'e1' } }]);
  assert.deepEqual(got, [6, 7]);
  assert.deepEqual(await sent, { status: 'ok', offset: 5, epoch: 'e1' });
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 8 }, { id: 'i8', offset: 8, epoch: 'e1' })]);
  assert.deepEqual(got, [6, 7, 8], 'live again');
  env.client.disconnect();
});

test('held messages are released when the uncertain send gives up', async () => {
  const env = setup();
  const room = env.client.channel('room1');
  const got = [];
  room.on('broadcast', '*', (m) => got.push(m.payload.n));
  room.subscribe();
  let ws = await live(env);
  ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e1', offset: 4 } });
  const sent = room.send('e', { n: 5 }, { timeoutMs: 5000 });
  const expectation = assert.rejects(sent, /timed out/);
  ws = await reconnect(env);
  ws.replyJoin('room1', { recovery: { recovered: true, epoch: 'e1', offset: 4 } });
  ws.receive([null, null, 'realtime:room1', 'broadcast', bc('e', { n: 5 }, { id: 'i5', offset: 5, epoch: 'e1' })]);
  assert.deepEqual(got, []);
  await env.clock.advance(5000);
  await expectation;
  assert.deepEqual(got, [5]);
  env.client.disconnect();
});
