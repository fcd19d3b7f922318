// Presence through realtime-js on vsn 1.0.0 and 2.0.0: track(), untrack(), presenceState() and the
// presence events sync/join/leave; leaves on disconnect, removeChannel() and a silently dead TCP
// connection (idle timeout); re-track and shared keys; 200 members converging; bad input (non-map
// payload, oversize payload, track flood, member limit, unjoined topic); the HTTP presence API.
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { disconnectAll, makeClient, subscribed, uniqueTopic, VSNS, wire } from './lib/client.mjs';
import { startHerald } from './lib/herald.mjs';
import { get, metric } from './lib/http.mjs';
import {
  member,
  payloadsOf,
  received,
  sortedState,
  stateKeys,
  UUID,
  waitForEvent,
  waitForKeys,
  waitForState,
} from './lib/presence.mjs';
import { startProxy } from './lib/proxy.mjs';
import { RawSocket } from './lib/raw.mjs';
import { anonToken, serviceToken } from './lib/tokens.mjs';
import { waitFor } from './lib/wait.mjs';

const IDLE_SECS = 2;
const MEMBER_LIMIT = 3;
/** Heartbeats well inside the idle timeout of `limited`. */
const FAST_HEARTBEAT = { heartbeatIntervalMs: 500 };

let server; // default settings
let limited; // short idle timeout and a member limit
const cleanups = [];
before(async () => {
  [server, limited] = await Promise.all([
    startHerald(),
    startHerald({
      env: {
        HERALD_IDLE_TIMEOUT_SECS: String(IDLE_SECS),
        HERALD_MAX_PRESENCE_MEMBERS: String(MEMBER_LIMIT),
      },
    }),
  ]);
});
afterEach(async () => {
  await disconnectAll();
  for (const fn of cleanups.splice(0)) await fn();
});
after(async () => Promise.all([server?.stop(), limited?.stop()]));

/** Waits for `m` to see every member of `members` under its key. */
const allSeeKeys = (members, keys, ms = 5000) =>
  Promise.all(members.map((m, i) => waitForKeys(m, keys, ms, `member ${i} (key "${m.key}")`)));

/** The one meta `m` shows under `key`; fails if there is not exactly one. */
function onlyMeta(m, key) {
  const metas = m.channel.presenceState()[key];
  assert.ok(Array.isArray(metas), `no "${key}" in ${JSON.stringify(sortedState(m.channel))}`);
  assert.equal(metas.length, 1, `one meta under "${key}": ${JSON.stringify(metas)}`);
  return metas[0];
}

/** A fresh pair of members on a fresh channel of `target` sees each other: the server still works. */
async function assertServerWorks(target, vsn, clientOptions = {}) {
  const name = uniqueTopic('still-works');
  const p = await member(target, name, { vsn, key: 'p', payload: { alive: true }, ...clientOptions });
  const q = await member(target, name, { vsn, key: 'q', payload: { alive: true }, ...clientOptions });
  await allSeeKeys([p, q], ['p', 'q']);
}

/** Index of the first system frame and of the phx_close after it for `topic` on `client`. */
function systemThenClose(client, topic) {
  const frames = received(client, topic);
  const sys = frames.findIndex((m) => m.event === 'system');
  const close = frames.findIndex((m, i) => i > sys && m.event === 'phx_close');
  return { frames, sys, close };
}

for (const vsn of VSNS) {
  describe(`presence on vsn ${vsn}`, () => {
    test('three members see each other, each with its own join and one meta per key', async () => {
      const name = uniqueTopic('three');
      const keys = ['alice', 'bob', 'carol'];
      const members = await Promise.all(
        keys.map((key) => member(server, name, { vsn, key, payload: { name: key, online_at: `t-${key}` } })),
      );
      await allSeeKeys(members, keys);
      const refs = Object.fromEntries(keys.map((k) => [k, onlyMeta(members[0], k).presence_ref]));
      for (const m of members) {
        for (const key of keys) {
          const meta = onlyMeta(m, key);
          assert.deepEqual(payloadsOf(m.channel, key), [{ name: key, online_at: `t-${key}` }]);
          assert.equal(typeof meta.presence_ref, 'string');
          assert.equal(meta.presence_ref, refs[key], `"${key}" has the same ref everywhere`);
          await waitForEvent(m, (e) => e.event === 'join' && e.key === key, 2000, `${m.key}: join of ${key}`);
        }
        assert.ok(m.events.items.some((e) => e.event === 'sync'), `sync events on ${m.key}`);
        // presence_state came once per join, addressed to the join (join_ref on 2.0.0).
        const states = received(m.client, m.channel.topic, 'presence_state');
        assert.equal(states.length, 1, `one presence_state; ${wire(m.client)}`);
        if (vsn === '2.0.0') assert.equal(states[0].join_ref, m.channel.joinPush.ref);
        assert.equal(states[0].ref, null);
      }
      assert.equal(new Set(Object.values(refs)).size, 3, 'phx_refs are unique');
    });

    test('an empty key becomes a server-generated UUID per channel join', async () => {
      const name = uniqueTopic('uuid');
      const a = await member(server, name, { vsn, key: '', payload: { who: 'a' } });
      const b = await member(server, name, { vsn, key: '', payload: { who: 'b' } });
      const state = await waitForState(a, (s) => Object.keys(s).length === 2, 5000, 'a to see two members');
      const keys = Object.keys(state);
      for (const key of keys) assert.match(key, UUID);
      assert.notEqual(keys[0], keys[1]);
      const keyOf = (m, who) => Object.keys(m.channel.presenceState()).find((k) => payloadsOf(m.channel, k)[0]?.who === who);
      await waitForKeys(b, keys, 5000, 'b');
      assert.equal(keyOf(a, 'a'), keyOf(b, 'a'));
      assert.equal(keyOf(a, 'b'), keyOf(b, 'b'));
    });

    test('disconnect() and removeChannel() each produce a leave for the others', async () => {
      const name = uniqueTopic('leave');
      const a = await member(server, name, { vsn, key: 'a', payload: { n: 'a' } });
      const b = await member(server, name, { vsn, key: 'b', payload: { n: 'b' } });
      const c = await member(server, name, { vsn, key: 'c', payload: { n: 'c' } });
      await allSeeKeys([a, b, c], ['a', 'b', 'c']);

      await b.client.disconnect();
      for (const m of [a, c]) {
        const leave = await waitForEvent(m, (e) => e.event === 'leave' && e.key === 'b', 5000, `${m.key}: leave of b`);
        assert.deepEqual(leave.leftPresences.map(({ presence_ref, ...p }) => p), [{ n: 'b' }]);
        assert.deepEqual(leave.currentPresences, []);
        await waitForKeys(m, ['a', 'c'], 5000, m.key);
      }

      assert.equal(await c.client.removeChannel(c.channel), 'ok');
      const leave = await waitForEvent(a, (e) => e.event === 'leave' && e.key === 'c', 5000, 'a: leave of c');
      assert.deepEqual(leave.leftPresences.map(({ presence_ref, ...p }) => p), [{ n: 'c' }]);
      await waitForKeys(a, ['a'], 5000, 'a');
      assert.ok(c.client.isConnected(), 'removeChannel() keeps the socket');
    });

    test('a late joiner receives the full state in presence_state', async () => {
      const name = uniqueTopic('late');
      const a = await member(server, name, { vsn, key: 'a', payload: { n: 1 } });
      const b = await member(server, name, { vsn, key: 'b', payload: { n: 2, nested: { list: [1, 'x'] } } });
      await allSeeKeys([a, b], ['a', 'b']);

      const late = await member(server, name, { vsn, key: 'late' });
      await waitForKeys(late, ['a', 'b'], 5000, 'the late joiner');
      assert.deepEqual(payloadsOf(late.channel, 'a'), [{ n: 1 }]);
      assert.deepEqual(payloadsOf(late.channel, 'b'), [{ n: 2, nested: { list: [1, 'x'] } }]);
      await waitForEvent(late, (e) => e.event === 'sync', 2000, 'a sync on the late joiner');

      // The whole state is in the one presence_state frame, which follows the join reply.
      const frames = received(late.client, late.channel.topic);
      const replyAt = frames.findIndex((m) => m.event === 'phx_reply' && m.ref === late.channel.joinPush.ref);
      const stateAt = frames.findIndex((m) => m.event === 'presence_state');
      assert.ok(replyAt >= 0 && stateAt > replyAt, `join reply then presence_state; ${wire(late.client)}`);
      const state = frames[stateAt].payload;
      assert.deepEqual(Object.keys(state).sort(), ['a', 'b']);
      assert.equal(state.a.metas.length, 1);
      assert.equal(typeof state.a.metas[0].phx_ref, 'string');
      assert.equal(state.a.metas[0].n, 1);
      assert.equal(state.a.metas[0].phx_ref, onlyMeta(a, 'a').presence_ref);
    });

    test('re-track replaces the meta in one diff; an identical re-track is a no-op', async () => {
      const name = uniqueTopic('retrack');
      const a = await member(server, name, { vsn, key: 'a', payload: { v: 0 } });
      const b = await member(server, name, { vsn, key: 'b', payload: { status: 'away' } });
      await allSeeKeys([a, b], ['a', 'b']);
      const oldRef = onlyMeta(a, 'b').presence_ref;
      const before = a.client.tap.frames.length;

      assert.equal(await b.channel.track({ status: 'online' }), 'ok');
      for (const m of [a, b]) {
        await waitForState(
          m,
          (s) => s.b?.length === 1 && s.b[0].status === 'online',
          5000,
          `${m.key} to see b online with one meta`,
        );
        assert.deepEqual(payloadsOf(m.channel, 'b'), [{ status: 'online' }]);
        assert.notEqual(onlyMeta(m, 'b').presence_ref, oldRef);
      }
      const newRef = onlyMeta(a, 'b').presence_ref;
      const join = await waitForEvent(a, (e) => e.event === 'join' && e.key === 'b' && e.newPresences[0]?.status === 'online', 2000, 'join of the new meta');
      assert.equal(join.newPresences.length, 1);
      const leave = await waitForEvent(a, (e) => e.event === 'leave' && e.key === 'b', 2000, 'leave of the old meta');
      assert.deepEqual(leave.leftPresences.map((p) => p.presence_ref), [oldRef]);

      // On the wire: one diff with the new meta (phx_ref_prev = old ref) and the old meta leaving.
      const diffs = received(a.client, a.channel.topic, 'presence_diff', before);
      const withB = diffs.filter((d) => d.payload.joins?.b || d.payload.leaves?.b);
      assert.equal(withB.length, 1, `one diff for the update; ${wire(a.client)}`);
      const { joins, leaves } = withB[0].payload;
      assert.equal(joins.b.metas.length, 1);
      assert.equal(joins.b.metas[0].phx_ref, newRef);
      assert.equal(joins.b.metas[0].phx_ref_prev, oldRef);
      assert.equal(joins.b.metas[0].status, 'online');
      assert.deepEqual(leaves.b.metas.map((m) => m.phx_ref), [oldRef]);

      // Identical payload: reply ok, no diff about b. A later change by c marks where one would be.
      const mark = a.client.tap.frames.length;
      assert.equal(await b.channel.track({ status: 'online' }), 'ok');
      await member(server, name, { vsn, key: 'c', payload: { v: 'c' } });
      await waitForKeys(a, ['a', 'b', 'c'], 5000, 'a');
      const later = received(a.client, a.channel.topic, 'presence_diff', mark);
      assert.ok(later.length >= 1, `the diff for c; ${wire(a.client)}`);
      for (const d of later) {
        assert.ok(!d.payload.joins?.b && !d.payload.leaves?.b, `no diff about b after an identical track: ${JSON.stringify(d.payload)}`);
      }
      assert.equal(onlyMeta(a, 'b').presence_ref, newRef);
    });

    test('untrack removes the member for the others; the channel stays joined and can track again', async () => {
      const name = uniqueTopic('untrack');
      const a = await member(server, name, { vsn, key: 'a', payload: { n: 'a' } });
      const b = await member(server, name, { vsn, key: 'b', payload: { n: 'b' } });
      await allSeeKeys([a, b], ['a', 'b']);

      assert.equal(await b.channel.untrack(), 'ok');
      const leave = await waitForEvent(a, (e) => e.event === 'leave' && e.key === 'b', 5000, 'a: leave of b');
      assert.deepEqual(leave.leftPresences.map(({ presence_ref, ...p }) => p), [{ n: 'b' }]);
      await allSeeKeys([a, b], ['a']);
      assert.equal(b.channel.state, 'joined');

      assert.equal(await b.channel.track({ n: 'b2' }), 'ok');
      await allSeeKeys([a, b], ['a', 'b']);
      assert.deepEqual(payloadsOf(a.channel, 'b'), [{ n: 'b2' }]);
    });

    test('two connections sharing a key show one key with two metas, and one leaves on disconnect', async () => {
      const name = uniqueTopic('shared');
      const obs = await member(server, name, { vsn, key: 'obs', payload: { n: 'obs' } });
      const s1 = await member(server, name, { vsn, key: 'shared', payload: { conn: 1 } });
      const s2 = await member(server, name, { vsn, key: 'shared', payload: { conn: 2 } });
      const sameKey = (s) => s.shared?.length === 2;
      for (const m of [obs, s1, s2]) await waitForState(m, sameKey, 5000, `${m.key} to see two metas under "shared"`);
      for (const m of [obs, s1, s2]) {
        assert.deepEqual(stateKeys(m.channel), ['obs', 'shared']);
        const metas = m.channel.presenceState().shared;
        assert.deepEqual(metas.map((x) => x.conn).sort(), [1, 2]);
        assert.notEqual(metas[0].presence_ref, metas[1].presence_ref);
      }

      await s1.client.disconnect();
      const leave = await waitForEvent(obs, (e) => e.event === 'leave' && e.key === 'shared', 5000, 'obs: leave under "shared"');
      assert.deepEqual(leave.leftPresences.map((p) => p.conn), [1]);
      assert.deepEqual(leave.currentPresences.map((p) => p.conn), [2]);
      for (const m of [obs, s2]) {
        await waitForState(m, (s) => s.shared?.length === 1, 5000, `${m.key} to see one meta under "shared"`);
        assert.deepEqual(payloadsOf(m.channel, 'shared'), [{ conn: 2 }]);
        assert.deepEqual(stateKeys(m.channel), ['obs', 'shared']);
      }
    });

    test('GET /api/channels/<name>/presence returns the state (service role only)', async () => {
      const name = uniqueTopic('http');
      const a = await member(server, name, { vsn, key: 'a', payload: { n: 'a' } });
      const b = await member(server, name, { vsn, key: 'b', payload: { n: 'b', deep: { x: [1] } } });
      await allSeeKeys([a, b], ['a', 'b']);

      const path = `/api/channels/${encodeURIComponent(name)}/presence`;
      const res = await get(server, path, { token: serviceToken() });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.json.topic, name);
      assert.deepEqual(Object.keys(res.json.state).sort(), ['a', 'b']);
      assert.deepEqual(res.json.state.a.metas, [{ phx_ref: onlyMeta(a, 'a').presence_ref, n: 'a' }]);
      assert.deepEqual(res.json.state.b.metas, [{ phx_ref: onlyMeta(a, 'b').presence_ref, n: 'b', deep: { x: [1] } }]);

      assert.equal((await get(server, path, { token: anonToken() })).status, 403);
      assert.equal((await get(server, path)).status, 401);

      const list = await get(server, '/api/channels', { token: serviceToken() });
      assert.equal(list.status, 200, list.text);
      const entry = list.json.channels.find((c) => c.topic === name);
      assert.deepEqual(entry, { topic: name, private: false, subscribers: 2, presences: 2 });
      assert.equal((await get(server, '/api/channels', { token: anonToken() })).status, 403);

      // The HTTP view follows changes.
      assert.equal(await b.channel.untrack(), 'ok');
      await waitForKeys(a, ['a'], 5000, 'a');
      const after = await get(server, path, { token: serviceToken() });
      assert.deepEqual(Object.keys(after.json.state), ['a']);
      const gauge = await metric(server, 'herald_presences');
      assert.ok(gauge >= 1, `herald_presences gauge: ${gauge}`);
      assert.ok((await metric(server, 'herald_presence_frames_total')) > 0);
      assert.ok((await metric(server, 'herald_presence_diffs_total')) > 0);
    });
  });

  describe(`presence bad input on vsn ${vsn}`, () => {
    test('a non-map track payload gets an error reply; the channel stays joined', async () => {
      const name = uniqueTopic('not-a-map');
      const obs = await member(server, name, { vsn, key: 'obs', payload: { n: 'obs' } });
      const m = await member(server, name, { vsn, key: 'm', payload: { n: 1 } });
      await allSeeKeys([obs, m], ['m', 'obs']);

      for (const bad of ['a string', [1, 2], 42, null]) {
        assert.equal(await m.channel.track(bad, { timeout: 3000 }), 'error', `track(${JSON.stringify(bad)})`);
      }
      const replies = received(m.client, m.channel.topic, 'phx_reply').filter((r) => r.payload.status === 'error');
      assert.equal(replies.length, 4, `four error replies; ${wire(m.client)}`);
      for (const r of replies) {
        assert.deepEqual(r.payload, { status: 'error', response: { reason: 'Presence track payload must be a map' } });
      }
      assert.equal(m.channel.state, 'joined');
      assert.deepEqual(payloadsOf(obs.channel, 'm'), [{ n: 1 }]);

      assert.equal(await m.channel.track({ n: 2 }), 'ok');
      await waitForState(obs, (s) => s.m?.[0]?.n === 2, 5000, 'obs to see m updated');
      await assertServerWorks(server, vsn);
    });

    test('an oversize track payload gets a system error and the channel is closed', async () => {
      const name = uniqueTopic('oversize');
      const obs = await member(server, name, { vsn, key: 'obs', payload: { n: 'obs' } });
      const m = await member(server, name, { vsn, key: 'm', payload: { blob: 'y'.repeat(15_000) } });
      await allSeeKeys([obs, m], ['m', 'obs']);

      m.channel.track({ blob: 'x'.repeat(20_000) }, { timeout: 3000 }).catch(() => {});
      const notice = await m.system.next(5000, () => `a system event; ${wire(m.client)}`);
      assert.deepEqual(
        { status: notice.status, message: notice.message, channel: notice.channel },
        { status: 'error', message: 'Track message size exceeded', channel: name },
        JSON.stringify(notice),
      );
      await m.statuses.find((s) => s.status === 'CLOSED', 3000, () => `CLOSED; ${wire(m.client)}`);
      const { frames, sys, close } = systemThenClose(m.client, m.channel.topic);
      assert.ok(sys >= 0 && close > sys, `system error then phx_close; ${wire(m.client)}`);
      assert.equal(frames[close].ref, m.channel.joinPush.ref);

      // Closing the channel untracked m; the big payload never reached anyone.
      await waitForEvent(obs, (e) => e.event === 'leave' && e.key === 'm', 5000, 'obs: leave of m');
      await waitForKeys(obs, ['obs'], 5000, 'obs');
      assert.ok(
        !received(obs.client, obs.channel.topic).some((f) => JSON.stringify(f.payload ?? '').includes('xxxxxxxxxx')),
        'the oversize payload was not delivered',
      );
      assert.ok(m.client.isConnected(), 'the socket stays open');
      assert.equal(await obs.channel.track({ n: 'obs again' }), 'ok');
      await waitForState(obs, (s) => s.obs?.[0]?.n === 'obs again', 5000, 'obs to see its own update');
      await assertServerWorks(server, vsn);
    });

    test('a track flood gets the presence rate limit system error and the channel is closed', async () => {
      const name = uniqueTopic('flood');
      const obs = await member(server, name, { vsn, key: 'obs', payload: { n: 'obs' } });
      const m = await member(server, name, { vsn, key: 'm' });
      const results = [];
      for (let i = 0; i < 60; i += 1) {
        m.channel.track({ i }, { timeout: 3000 }).then((r) => results.push(r), () => {});
      }
      const notice = await m.system.next(5000, () => `a system event; ${wire(m.client)}`);
      assert.deepEqual(
        { status: notice.status, message: notice.message, channel: notice.channel },
        { status: 'error', message: 'Client presence rate limit exceeded', channel: name },
        JSON.stringify(notice),
      );
      await m.statuses.find((s) => s.status === 'CLOSED', 3000, () => `CLOSED; ${wire(m.client)}`);
      const { frames, sys, close } = systemThenClose(m.client, m.channel.topic);
      assert.ok(sys >= 0 && close > sys, `system error then phx_close; ${wire(m.client)}`);
      assert.equal(frames[close].ref, m.channel.joinPush.ref);
      const oks = frames.filter((f) => f.event === 'phx_reply' && f.payload.status === 'ok' && f.ref !== m.channel.joinPush.ref);
      assert.equal(oks.length, 50, `the first 50 tracks of the window are accepted; ${wire(m.client)}`);

      // m is gone for the others; the server and the socket carry on.
      await waitForKeys(obs, ['obs'], 5000, 'obs');
      assert.ok(m.client.isConnected(), 'the socket stays open');
      const again = m.client.channel(uniqueTopic('after-flood'));
      await subscribed(again);
      await assertServerWorks(server, vsn);
    });

    test('a presence push on a topic that is not joined gets "unmatched topic"', async () => {
      const raw = await RawSocket.open(`${server.wsEndpoint()}/websocket?apikey=${anonToken()}&vsn=${vsn}`);
      cleanups.push(() => raw.close());
      const frame = (join_ref, ref, topic, event, payload) =>
        vsn === '2.0.0' ? [join_ref, ref, topic, event, payload] : { topic, event, payload, ref, join_ref };
      const topic = `realtime:${uniqueTopic('unjoined')}`;
      raw.send(frame('1', '2', topic, 'presence', { type: 'presence', event: 'track', payload: { a: 1 } }));
      raw.send(frame('1', '3', topic, 'presence', { type: 'presence', event: 'untrack' }));
      for (const ref of ['2', '3']) {
        const reply = await raw.expect((m) => m.ref === ref, 3000, `reply to presence push ${ref}`);
        assert.equal(reply.event, 'phx_reply');
        assert.equal(reply.topic, topic);
        assert.deepEqual(reply.payload, { status: 'error', response: { reason: 'unmatched topic' } });
      }
      assert.ok(!raw.frames.some((f) => f.text?.includes('presence_diff')), 'no presence_diff');
      // The raw socket still works: a join with presence gets presence_state.
      raw.send(frame('4', '4', topic, 'phx_join', { config: { presence: { key: 'raw', enabled: true } } }));
      await raw.expect((m) => m.ref === '4' && m.payload?.status === 'ok', 3000, 'join reply');
      await raw.expect((m) => m.event === 'presence_state', 3000, 'presence_state');
      await assertServerWorks(server, vsn);
    });
  });

  describe(`presence limits on vsn ${vsn} (idle timeout ${IDLE_SECS} s, ${MEMBER_LIMIT} members)`, () => {
    test('a connection that dies silently is dropped by the idle timeout and its member leaves', async (t) => {
      const proxy = await startProxy(limited.port);
      cleanups.push(() => proxy.close());
      const name = uniqueTopic('dead');
      const watcher = await member(limited, name, { vsn, key: 'watcher', payload: { n: 'w' }, ...FAST_HEARTBEAT });
      const viaProxy = { wsEndpoint: (path = '/socket') => `ws://127.0.0.1:${proxy.port}${path}` };
      const ghost = await member(viaProxy, name, { vsn, key: 'ghost', payload: { n: 'g' }, heartbeatIntervalMs: 60_000 });
      await allSeeKeys([watcher, ghost], ['ghost', 'watcher']);
      assert.equal(proxy.connections.length, 1);

      // An identical track (a no-op) is the ghost's last frame, just before the cut.
      assert.equal(await ghost.channel.track({ n: 'g' }), 'ok');
      const cutAt = proxy.cut();
      await waitForEvent(
        watcher,
        (e) => e.event === 'leave' && e.key === 'ghost',
        IDLE_SECS * 1000 + 4000,
        'watcher: leave of the silent member',
      );
      const elapsed = Date.now() - cutAt;
      t.diagnostic(`leave seen ${elapsed} ms after the cut (idle timeout ${IDLE_SECS} s)`);
      await waitForKeys(watcher, ['watcher'], 2000, 'watcher');
      // The leave came from the server's idle timeout, not from a close the proxy passed on.
      assert.ok(
        elapsed >= IDLE_SECS * 1000 - 500,
        `the leave came ${elapsed} ms after the cut, sooner than the ${IDLE_SECS} s idle timeout`,
      );
      const [conn] = proxy.connections;
      await waitFor(() => conn.upstreamClosedAt !== null, 3000, 'the server to close its side of the dead connection');
      assert.equal(conn.clientClosedAt, null, 'the client side was left open');
      assert.ok(ghost.client.isConnected(), 'the client never noticed');
      assert.equal(watcher.channel.state, 'joined');
      assert.ok(watcher.client.isConnected(), 'the watcher (heartbeating) stays connected');
      await proxy.close(); // lets the ghost's disconnect() finish without waiting for a close frame
    });

    test(`over ${MEMBER_LIMIT} members a new track gets a system error and the channel is closed`, async () => {
      const name = uniqueTopic('full');
      const keys = ['k1', 'k2', 'k3'];
      const members = [];
      for (const key of keys) members.push(await member(limited, name, { vsn, key, payload: { key }, ...FAST_HEARTBEAT }));
      await allSeeKeys(members, keys);

      const extra = await member(limited, name, { vsn, key: 'k4', ...FAST_HEARTBEAT });
      await waitForKeys(extra, keys, 5000, 'k4 (not tracked yet)');
      extra.channel.track({ key: 'k4' }, { timeout: 3000 }).catch(() => {});
      const notice = await extra.system.next(5000, () => `a system event; ${wire(extra.client)}`);
      assert.deepEqual(
        { status: notice.status, message: notice.message, channel: notice.channel },
        { status: 'error', message: 'Too many presence members in this channel', channel: name },
        JSON.stringify(notice),
      );
      await extra.statuses.find((s) => s.status === 'CLOSED', 3000, () => `CLOSED; ${wire(extra.client)}`);
      const { frames, sys, close } = systemThenClose(extra.client, extra.channel.topic);
      assert.ok(sys >= 0 && close > sys, `system error then phx_close; ${wire(extra.client)}`);

      // An update by a member at the limit is not a new member.
      assert.equal(await members[0].channel.track({ key: 'k1', v: 2 }), 'ok');
      for (const m of members) {
        await waitForState(m, (s) => s.k1?.[0]?.v === 2, 5000, `${m.key} to see the update of k1`);
        assert.deepEqual(stateKeys(m.channel), keys);
      }
      assert.ok(!received(members[0].client, members[0].channel.topic, 'presence_diff').some((d) => d.payload.joins?.k4));
      await assertServerWorks(limited, vsn, FAST_HEARTBEAT);
    });
  });
}

describe('presence at scale', () => {
  test('200 members (100 per vsn) converge everywhere, then 100 leave and everyone converges again', async (t) => {
    const N = 200;
    const name = uniqueTopic('crowd');
    const key = (i) => `m${String(i).padStart(3, '0')}`;
    const allKeys = Array.from({ length: N }, (_, i) => key(i));
    const started = Date.now();

    // Each member keeps the set of keys it sees from its join/leave events; presenceState() is
    // compared in full once the sets are complete.
    const members = Array.from({ length: N }, (_, i) => {
      const client = makeClient(server, { vsn: VSNS[i % 2] });
      const channel = client.channel(name, { config: { presence: { key: key(i) } } });
      const seen = new Set();
      channel.on('presence', { event: 'join' }, ({ key: k }) => seen.add(k));
      channel.on('presence', { event: 'leave' }, ({ key: k, currentPresences }) => {
        if (currentPresences.length === 0) seen.delete(k);
      });
      return { i, key: key(i), client, channel, seen };
    });
    await Promise.all(
      members.map(async (m) => {
        await subscribed(m.channel, 15_000);
        assert.equal(await m.channel.track({ i: m.i }, { timeout: 10_000 }), 'ok', `track of ${m.key}`);
      }),
    );
    const converge = async (group, expected, what) => {
      await waitFor(
        () => group.every((m) => m.seen.size === expected.length),
        15_000,
        () => {
          const behind = group.filter((m) => m.seen.size !== expected.length);
          return `${what}: ${behind.length} members not at ${expected.length} keys (e.g. ${behind[0]?.key} has ${behind[0]?.seen.size}); ${wire(behind[0]?.client ?? group[0].client)}`;
        },
      );
      for (const m of group) {
        const state = m.channel.presenceState();
        assert.deepEqual(Object.keys(state).sort(), expected, `${m.key} (vsn ${m.client.vsn}): presenceState keys`);
        for (const k of expected) {
          assert.equal(state[k].length, 1, `${m.key} sees one meta for ${k}`);
          assert.equal(state[k][0].i, Number(k.slice(1)));
        }
      }
    };
    await converge(members, allKeys, 'all 200 joined');
    t.diagnostic(`200 members converged ${Date.now() - started} ms after the first connect`);

    // Half leave, as many of each vsn, alternating between disconnect() and removeChannel().
    const leaves = (m) => Math.floor(m.i / 2) % 2 === 1;
    const leaving = members.filter(leaves);
    const staying = members.filter((m) => !leaves(m));
    const leftAt = Date.now();
    await Promise.all(
      leaving.map((m, j) => (j % 2 === 0 ? m.client.disconnect() : m.client.removeChannel(m.channel))),
    );
    await converge(staying, staying.map((m) => m.key).sort(), '100 left');
    t.diagnostic(`the 100 remaining converged ${Date.now() - leftAt} ms after the leaves began`);
    const res = await get(server, `/api/channels/${encodeURIComponent(name)}/presence`, { token: serviceToken() });
    assert.equal(Object.keys(res.json.state).length, 100);
  });
});
