// The SSE transport against a scripted EventSource: stream URLs, cursor persistence in storage,
// resuming after a reload, recovery events, stream replacement, HTTP sends.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Herald } from '../herald.js';
import { FakeClock, MemoryStorage, fakeEventSourceClass, fakeFetch, flush } from './helpers/fakes.mjs';
import { signJwt } from './helpers/tokens.mjs';

function setup(extra = {}) {
  const clock = extra.clock ?? new FakeClock();
  const ES = fakeEventSourceClass();
  const client = new Herald('http://herald.test', {
    token: signJwt({ role: 'anon', exp: Math.floor(clock.time / 1000) + 3600 }),
    EventSource: ES,
    transports: ['sse'],
    fetch: fakeFetch(202),
    clock,
    random: () => 0.5,
    window: null,
    document: null,
    logger: () => {},
    ...extra,
  });
  return { clock, ES, client };
}

const msg = (topic, n, offset, epoch = 'e') => ({ topic, event: 'e', payload: { n }, meta: { id: `${topic}-${offset}`, offset, epoch } });

test('one stream for the public channels; the cursor of every event is kept in storage', async () => {
  const storage = new MemoryStorage();
  const env = setup({ storage });
  const got = [];
  for (const name of ['b', 'a']) {
    const ch = env.client.channel(name);
    ch.on('broadcast', '*', (m) => got.push(`${m.topic}${m.payload.n}`));
    ch.subscribe();
  }
  await env.clock.advance(0);
  assert.equal(env.ES.instances.length, 1, 'subscriptions in one tick share one stream');
  const es = env.ES.last;
  assert.deepEqual(es.params.getAll('topic'), ['a', 'b']);
  assert.equal(es.params.get('last_event_id'), null);
  assert.equal(es.params.get('presence'), null);
  es.open();
  assert.equal(env.client.state.state, 'live');
  es.emit('broadcast', msg('a', 1, 1), 'C1');
  es.emit('broadcast', msg('b', 1, 1), 'C2');
  es.emit('broadcast', msg('b', 1, 1), 'C2'); // a duplicate
  assert.deepEqual(got, ['a1', 'b1']);
  assert.deepEqual(JSON.parse(storage.getItem('herald:http://herald.test:sse:public')), { cursor: 'C2', topics: ['a', 'b'] });
  env.client.disconnect();
  assert.equal(es.closed, true);
});

test('a reload resumes from the stored cursor; recovered:false is reported only for channels the cursor covered', async () => {
  const storage = new MemoryStorage();
  storage.setItem('herald:http://herald.test:sse:public', JSON.stringify({ cursor: 'C9', topics: ['a', 'b'] }));
  const env = setup({ storage });
  const recoveries = [];
  for (const name of ['a', 'b', 'c']) {
    const ch = env.client.channel(name);
    ch.on('recovery', (e) => recoveries.push(e));
    ch.subscribe();
  }
  await env.clock.advance(0);
  const es = env.ES.last;
  assert.equal(es.params.get('last_event_id'), 'C9');
  es.open();
  es.emit('system', { topic: 'b', recovered: false });
  es.emit('system', { topic: 'c', recovered: false }); // new to this page: nothing to recover
  assert.deepEqual(recoveries, [{ recovered: false, topic: 'b', transport: 'sse', reason: 'the server could not resume from the cursor' }]);
  env.client.disconnect();
});

test('after the stream dies the client reconnects with its latest cursor; without one, live channels are told', async () => {
  const env = setup({ storage: null });
  const ch = env.client.channel('a');
  const recoveries = [];
  const got = [];
  ch.on('recovery', (e) => recoveries.push(e));
  ch.on('broadcast', '*', (m) => got.push(m.payload.n));
  ch.subscribe();
  await env.clock.advance(0);
  let es = env.ES.last;
  es.open();
  // Dies before any event carried a cursor.
  es.error();
  await flush();
  assert.equal(env.client.state.state, 'reconnecting');
  await env.clock.advance(250);
  es = env.ES.last;
  assert.equal(es.params.get('last_event_id'), null);
  es.open();
  assert.equal(recoveries.length, 1, 'no cursor: the app must reload');
  es.emit('broadcast', msg('a', 1, 1), 'C1');
  es.emit('broadcast', msg('a', 2, 2), 'C2');
  es.error();
  await env.clock.advance(250);
  es = env.ES.last;
  assert.equal(es.params.get('last_event_id'), 'C2', 'kept in memory without storage');
  es.open();
  es.emit('broadcast', { ...msg('a', 2, 2), meta: { ...msg('a', 2, 2).meta, replayed: true } }, 'C2');
  es.emit('broadcast', msg('a', 3, 3), 'C3');
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(recoveries.length, 1);
  env.client.disconnect();
});

test('a channel added while live replaces the stream only once the new one is open', async () => {
  const env = setup({ storage: new MemoryStorage() });
  const got = [];
  const a = env.client.channel('a');
  a.on('broadcast', '*', (m) => got.push(m.payload.n));
  a.subscribe();
  await env.clock.advance(0);
  const first = env.ES.last;
  first.open();
  first.emit('broadcast', msg('a', 1, 1), 'C1');
  const b = env.client.channel('b', { presence: { enabled: true } });
  b.subscribe();
  await env.clock.advance(0);
  const second = env.ES.last;
  assert.notEqual(second, first);
  assert.deepEqual(second.params.getAll('topic'), ['a', 'b']);
  assert.equal(second.params.get('presence'), '1');
  assert.equal(second.params.get('last_event_id'), 'C1');
  assert.equal(first.closed, false, 'the old stream keeps delivering meanwhile');
  first.emit('broadcast', msg('a', 2, 2), 'C2');
  second.open();
  assert.equal(first.closed, true);
  assert.equal(b.status, 'joined');
  second.emit('broadcast', msg('a', 2, 2), 'D2'); // replayed overlap
  second.emit('broadcast', msg('a', 3, 3), 'D3');
  assert.deepEqual(got, [1, 2, 3]);
  second.emit('presence_state', { topic: 'b', payload: { u: { metas: [{ phx_ref: '1' }] } } });
  assert.deepEqual(Object.keys(b.presenceState()), ['u']);
  assert.equal(env.client.state.state, 'live');
  env.client.disconnect();
});

test('SSE sends go over POST /api/broadcast with the idempotency key; own messages are skipped unless self', async () => {
  const fetch = fakeFetch(202);
  const env = setup({ fetch, storage: null });
  const room = env.client.channel('room1');
  const got = [];
  room.on('broadcast', '*', (m) => got.push(m.payload));
  room.subscribe();
  await env.clock.advance(0);
  env.ES.last.open();
  await room.send('chat', { text: 'hi' }, { idempotencyKey: 'k-7' });
  const call = fetch.calls.find((c) => c.url.endsWith('/api/broadcast'));
  assert.equal(call.init.headers.authorization, `Bearer ${env.client.token}`);
  assert.deepEqual(JSON.parse(call.init.body), {
    messages: [{ topic: 'room1', event: 'chat', payload: { text: 'hi' }, private: false, id: 'k-7', idempotency_key: 'k-7' }],
  });
  env.ES.last.emit('broadcast', { topic: 'room1', event: 'chat', payload: { text: 'hi' }, meta: { id: 'k-7', offset: 1, epoch: 'e' } }, 'C1');
  env.ES.last.emit('broadcast', { topic: 'room1', event: 'chat', payload: { text: 'other' }, meta: { id: 'z', offset: 2, epoch: 'e' } }, 'C2');
  assert.deepEqual(got, [{ text: 'other' }]);
  await assert.rejects(room.track({ a: 1 }), /WebSocket/);
  env.client.disconnect();
});

test('SSE sends retry while the server is unreachable and reject on a 4xx', async () => {
  let status = null;
  const fetch = fakeFetch(() => status);
  const env = setup({ fetch, storage: null });
  const room = env.client.channel('room1');
  room.subscribe();
  await env.clock.advance(0);
  env.ES.last.open();
  const sent = room.send('chat', { n: 1 });
  await flush();
  assert.equal(fetch.calls.length, 1);
  status = 202;
  await env.clock.advance(250);
  assert.deepEqual(await sent, { status: 'ok' });
  assert.equal(fetch.calls.length, 2);
  const keys = fetch.calls.map((c) => JSON.parse(c.init.body).messages[0].idempotency_key);
  assert.equal(keys[0], keys[1], 'the retry reuses the key');
  status = 403;
  await assert.rejects(room.send('chat', {}), /HTTP 403/);
  env.client.disconnect();
});

test('the `ready` event’s cursor is kept: a stream that drops before its first broadcast resumes from it', async () => {
  const storage = new MemoryStorage();
  const env = setup({ storage });
  const ch = env.client.channel('a');
  const recoveries = [];
  const got = [];
  ch.on('recovery', (e) => recoveries.push(e));
  ch.on('broadcast', '*', (m) => got.push(m.payload.n));
  ch.subscribe();
  await env.clock.advance(0);
  let es = env.ES.last;
  es.open();
  es.emit('ready', { topics: ['a'] }, 'R0');
  assert.deepEqual(JSON.parse(storage.getItem('herald:http://herald.test:sse:public')), { cursor: 'R0', topics: ['a'] });
  es.error(); // before any broadcast
  await flush();
  assert.equal(env.client.state.state, 'reconnecting');
  await env.clock.advance(250);
  es = env.ES.last;
  assert.equal(es.params.get('last_event_id'), 'R0');
  es.open();
  es.emit('broadcast', { ...msg('a', 1, 1), meta: { ...msg('a', 1, 1).meta, replayed: true } }, 'C1');
  es.emit('ready', { topics: ['a'] }, 'C1');
  assert.deepEqual(got, [1]);
  assert.deepEqual(recoveries, [], 'a cursor to resume from: no recovered:false');

  // A reload (a new client on the same storage) resumes from it too.
  env.client.disconnect();
  const again = setup({ storage, clock: env.clock });
  const ch2 = again.client.channel('a');
  const recoveries2 = [];
  ch2.on('recovery', (e) => recoveries2.push(e));
  ch2.subscribe();
  await env.clock.advance(0);
  assert.equal(again.ES.last.params.get('last_event_id'), 'C1');
  again.ES.last.open();
  assert.deepEqual(recoveries2, []);
  again.client.disconnect();
});

test('a `ready` without a cursor (channels without history) keeps the previous one', async () => {
  const storage = new MemoryStorage();
  const env = setup({ storage });
  env.client.channel('a').subscribe();
  await env.clock.advance(0);
  const es = env.ES.last;
  es.open();
  es.emit('broadcast', msg('a', 1, 1), 'C1');
  es.emit('ready', { topics: ['a'] }, '');
  assert.equal(JSON.parse(storage.getItem('herald:http://herald.test:sse:public')).cursor, 'C1');
  env.client.disconnect();
});
