// The connection state machine with a fake clock and scripted transports: backoff schedule,
// offline/online and visibility, heartbeats, auth failure rules, transport fallback, token refresh.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Herald } from '../herald.js';
import {
  FakeClock,
  fakeDocument,
  fakeEventSourceClass,
  fakeFetch,
  fakeWebSocketClass,
  fakeWindow,
  flush,
} from './helpers/fakes.mjs';
import { signJwt } from './helpers/tokens.mjs';

/** A token expiring `ttl` seconds after the fake clock's time. */
const tokenAt = (clock, ttl = 3600, role = 'anon') => signJwt({ role, exp: Math.floor(clock.time / 1000) + ttl });

function setup(extra = {}) {
  const clock = extra.clock ?? new FakeClock();
  const WS = fakeWebSocketClass();
  const ES = fakeEventSourceClass();
  const win = fakeWindow();
  const doc = fakeDocument();
  const fetch = extra.fetch === undefined ? fakeFetch(null) : extra.fetch;
  const client = new Herald('http://herald.test', {
    token: tokenAt(clock),
    WebSocket: WS,
    EventSource: ES,
    clock,
    random: () => 0.5,
    window: win,
    document: doc,
    storage: null,
    logger: () => {},
    ...extra,
    fetch,
  });
  const states = [];
  client.on('state', (s) => states.push(s));
  return { clock, WS, ES, win, doc, client, states, fetch };
}

const names = (states) => states.map((s) => s.state);

test('connects to /socket/websocket with apikey and vsn=2.0.0 and goes live', async () => {
  const { client, WS, states } = setup();
  assert.equal(client.state.state, 'closed');
  client.connect();
  await flush();
  const url = new URL(WS.last.url);
  assert.equal(`${url.protocol}//${url.host}${url.pathname}`, 'ws://herald.test/socket/websocket');
  assert.equal(url.searchParams.get('vsn'), '2.0.0');
  assert.equal(url.searchParams.get('apikey'), client.token);
  assert.equal(WS.last.binaryType, 'arraybuffer');
  WS.last.open();
  assert.deepEqual(names(states), ['connecting', 'live']);
  assert.equal(client.state.transport, 'websocket');
  client.disconnect();
  assert.equal(client.state.state, 'closed');
});

test('reconnects with full-jitter backoff from the injected random, then fails after maxAttempts', async () => {
  const randoms = [0.1, 0.9, 0.5, 0.3];
  let i = 0;
  const { client, WS, clock, states } = setup({
    transports: ['websocket'],
    backoff: { baseMs: 100, capMs: 1000, maxAttempts: 4 },
    random: () => randoms[i++ % randoms.length],
  });
  client.connect();
  await flush();
  const expected = [10, 180, 200, 240]; // floor(r * min(1000, 100 * 2^(n-1)))
  for (let n = 1; n <= 4; n += 1) {
    WS.last.drop();
    await flush();
    const s = client.state;
    assert.equal(s.state, 'reconnecting');
    assert.equal(s.attempt, n);
    assert.equal(s.delay, expected[n - 1]);
    assert.deepEqual(clock.pending(), [expected[n - 1]], 'exactly one timer: the reconnect');
    const before = WS.instances.length;
    await clock.advance(expected[n - 1] - 1);
    assert.equal(WS.instances.length, before, 'no attempt before the delay is over');
    await clock.advance(1);
    assert.equal(WS.instances.length, before + 1, 'the attempt at the end of the delay');
    assert.equal(client.state.state, 'connecting');
  }
  WS.last.drop();
  await flush();
  assert.equal(client.state.state, 'failed');
  assert.match(client.state.reason, /gave up after 4 attempts/);
  assert.deepEqual(clock.pending(), []);
  assert.deepEqual(names(states).slice(0, 3), ['connecting', 'reconnecting', 'connecting']);
  // A successful open resets the attempt count.
  client.connect();
  await flush();
  WS.last.open();
  WS.last.drop();
  await flush();
  assert.equal(client.state.attempt, 1);
  client.disconnect();
});

test('offline stops trying; online and page visibility retry at once', async () => {
  const { client, WS, win, doc, clock } = setup({ transports: ['websocket'], backoff: { baseMs: 60_000, capMs: 60_000 } });
  client.connect();
  await flush();
  WS.last.open();
  win.navigator.onLine = false;
  win.dispatchEvent(new Event('offline'));
  assert.equal(client.state.state, 'offline');
  assert.equal(WS.last.closed, true);
  assert.deepEqual(clock.pending(), []);
  const count = WS.instances.length;
  win.navigator.onLine = true;
  win.dispatchEvent(new Event('online'));
  await flush();
  assert.equal(client.state.state, 'connecting');
  assert.equal(WS.instances.length, count + 1, 'a new socket without waiting');
  WS.last.open();
  WS.last.drop();
  await flush();
  assert.equal(client.state.state, 'reconnecting');
  assert.equal(client.state.delay, 30_000);
  doc.visibilityState = 'visible';
  doc.dispatchEvent(new Event('visibilitychange'));
  await flush();
  assert.equal(client.state.state, 'connecting', 'visible page retries now');
  assert.equal(WS.instances.length, count + 2);
  // Starting while the browser is offline goes straight to `offline`.
  client.disconnect();
  win.navigator.onLine = false;
  client.connect();
  await flush();
  assert.equal(client.state.state, 'offline');
  client.disconnect();
});

test('heartbeats every interval; an unanswered one ends the socket', async () => {
  const { client, WS, clock } = setup({ transports: ['websocket'] });
  client.connect();
  await flush();
  const ws = WS.last;
  ws.answerHeartbeats = false;
  ws.open();
  await clock.advance(24_999);
  assert.equal(ws.framesOf('heartbeat').length, 0);
  await clock.advance(1);
  const [hb] = ws.framesOf('heartbeat');
  assert.deepEqual([hb[0], hb[2], hb[3], hb[4]], [null, 'phoenix', 'heartbeat', {}]);
  ws.receive([null, hb[1], 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
  await clock.advance(10_000);
  assert.equal(client.state.state, 'live', 'answered heartbeat keeps the socket');
  await clock.advance(15_000);
  assert.equal(ws.framesOf('heartbeat').length, 2);
  await clock.advance(9_999);
  assert.equal(client.state.state, 'live');
  await clock.advance(1);
  assert.equal(client.state.state, 'reconnecting');
  assert.match(client.state.reason, /heartbeat timeout/);
  assert.equal(ws.closed, true);
  client.disconnect();
});

test('failed: the HTTP probe answers 401 after the socket fails to open', async () => {
  const fetch = fakeFetch(401);
  const { client, WS, clock } = setup({ fetch });
  client.connect();
  await flush();
  WS.last.drop();
  await flush();
  assert.equal(client.state.state, 'failed');
  assert.match(client.state.reason, /unauthorized/);
  assert.deepEqual(clock.pending(), []);
  const probe = fetch.calls[0];
  assert.equal(probe.url, 'http://herald.test/api/broadcast');
  assert.equal(probe.init.method, 'POST');
  assert.equal(probe.init.headers.authorization, `Bearer ${client.token}`);
  assert.equal(probe.init.body, '{"messages":[]}');
  // A new token brings it back.
  client.setToken(tokenAt(clock, 7200));
  await flush();
  assert.equal(client.state.state, 'connecting');
  client.disconnect();
});

test('failed without a probe: repeated immediate failures with an expired token', async () => {
  const clock = new FakeClock();
  const expired = signJwt({ role: 'anon', exp: Math.floor(clock.time / 1000) - 10 });
  const { client, WS } = setup({ clock, fetch: null, token: expired, transports: ['websocket'], backoff: { baseMs: 10, capMs: 10 } });
  client.connect();
  for (let n = 0; n < 2; n += 1) {
    await flush();
    WS.last.drop();
    await flush();
    assert.equal(client.state.state, 'reconnecting');
    await clock.advance(10);
  }
  WS.last.drop();
  await flush();
  assert.equal(client.state.state, 'failed');
  client.disconnect();

  // The same failures with a valid token are a network problem: keep trying.
  const other = setup({ fetch: null, transports: ['websocket'], backoff: { baseMs: 10, capMs: 10 } });
  other.client.connect();
  for (let n = 0; n < 5; n += 1) {
    await flush();
    other.WS.last.drop();
    await flush();
    assert.equal(other.client.state.state, 'reconnecting');
    await other.clock.advance(10);
  }
  other.client.disconnect();
});

test('failed: the token callback keeps failing', async () => {
  let calls = 0;
  const { client, WS, clock } = setup({
    token: undefined,
    getToken: async () => {
      calls += 1;
      throw new Error('auth server says no');
    },
    backoff: { baseMs: 10, capMs: 10 },
  });
  client.connect();
  await flush();
  assert.equal(client.state.state, 'reconnecting');
  await clock.advance(10);
  await clock.advance(10);
  assert.equal(client.state.state, 'failed');
  assert.match(client.state.reason, /auth server says no/);
  assert.equal(calls, 3);
  assert.equal(WS.instances.length, 0, 'never connected without a token');
});

test('falls back to SSE after the WebSocket fails to open twice (server reachable)', async () => {
  const fetch = fakeFetch(202);
  const { client, WS, ES, clock, states } = setup({ fetch, backoff: { baseMs: 10, capMs: 10 } });
  const room = client.channel('room1');
  room.subscribe();
  await flush();
  WS.last.drop();
  await flush();
  await clock.advance(10);
  WS.last.drop();
  await flush();
  assert.equal(client.state.transport, 'sse', 'the next attempt uses SSE');
  await clock.advance(10);
  assert.equal(WS.instances.length, 2);
  const es = ES.last;
  assert.ok(es, 'an EventSource was opened');
  const url = new URL(es.url);
  assert.equal(url.pathname, '/sse');
  assert.deepEqual(url.searchParams.getAll('topic'), ['room1']);
  assert.equal(url.searchParams.get('apikey'), client.token);
  es.open();
  assert.equal(client.state.state, 'live');
  assert.equal(client.state.transport, 'sse');
  assert.equal(room.status, 'joined');
  assert.ok(names(states).includes('reconnecting'));
  client.disconnect();
  assert.equal(es.closed, true);
});

test('SSE: HTTP 401 on the stream means failed', async () => {
  const { client, ES } = setup({ transports: ['sse'], fetch: fakeFetch(202) });
  client.channel('r').subscribe();
  await flush();
  ES.last.error(401);
  await flush();
  assert.equal(client.state.state, 'failed');
});

test('token callback: on connect, before expiry (pushing access_token), and before a rejoin', async () => {
  const clock = new FakeClock();
  const reasons = [];
  let n = 0;
  const getToken = (reason) => {
    reasons.push(reason);
    n += 1;
    return signJwt({ role: 'anon', exp: Math.floor(clock.time / 1000) + 120, n });
  };
  const { client, WS } = setup({ clock, token: undefined, getToken });
  const room = client.channel('room1');
  room.subscribe();
  await flush();
  assert.deepEqual(reasons, ['connect']);
  const ws = WS.last;
  assert.equal(new URL(ws.url).searchParams.get('apikey'), client.token);
  ws.open();
  const join = ws.replyJoin('room1', { recovery: { recovered: false, epoch: 'e', offset: 0 } });
  assert.equal(join[4].access_token, client.token);
  assert.equal(room.status, 'joined');
  // 120 s token, refreshed 60 s before it expires.
  await clock.advance(59_000);
  assert.deepEqual(reasons, ['connect']);
  await clock.advance(1_000);
  assert.deepEqual(reasons, ['connect', 'refresh']);
  const [push] = ws.framesOf('access_token');
  assert.deepEqual(push[4], { access_token: client.token });
  assert.equal(push[0], join[0], 'sent on the joined channel');
  assert.equal(push[2], 'realtime:room1');
  // The server closes the channel (say, the token expired): rejoin with a fresh token.
  ws.receive([join[0], null, 'realtime:room1', 'system', { extension: 'system', status: 'error', message: 'Token has expired 1 seconds ago', channel: 'room1' }]);
  ws.receive([join[0], join[0], 'realtime:room1', 'phx_close', {}]);
  assert.equal(room.status, 'errored');
  await clock.advance(500);
  assert.deepEqual(reasons, ['connect', 'refresh', 'rejoin']);
  const rejoin = ws.framesOf('phx_join').pop();
  assert.notEqual(rejoin[0], join[0]);
  assert.equal(rejoin[4].access_token, client.token);
  client.disconnect();
});
