// Pure helpers: backoff, JWT expiry, binary frames, de-duplication, presence.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BoundedSet,
  Deduper,
  PresenceState,
  backoffDelay,
  decodeBroadcastFrame,
  encodePushFrame,
  tokenExpiresAt,
} from '../herald.js';
import { signJwt } from './helpers/tokens.mjs';

test('backoffDelay draws from [0, min(cap, base * 2^(attempt-1)))', () => {
  const top = () => 0.999999;
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffDelay(a, { baseMs: 100, capMs: 3000 }, top)),
    [99, 199, 399, 799, 1599, 2999, 2999, 2999],
  );
  assert.equal(backoffDelay(6, { baseMs: 100, capMs: 3000 }, () => 0), 0);
  assert.equal(backoffDelay(3, { baseMs: 100, capMs: 3000 }, () => 0.5), 200);
  assert.equal(backoffDelay(60, { baseMs: 500, capMs: 30_000 }, top), 29_999, 'huge attempts stay capped');
});

test('tokenExpiresAt reads exp from the JWT, null when absent or undecodable', () => {
  assert.equal(tokenExpiresAt(signJwt({ role: 'anon', exp: 2_000_000_000 })), 2_000_000_000_000);
  assert.equal(tokenExpiresAt(signJwt({ role: 'anon' })), null);
  assert.equal(tokenExpiresAt('not-a-jwt'), null);
  assert.equal(tokenExpiresAt(null), null);
});

test('decodes kind-4 broadcasts: raw bytes and JSON with metadata', () => {
  const raw = new Uint8Array([4, 10, 1, 0, 0, ...Buffer.from('realtime:r'), ...Buffer.from('e'), 9, 8, 7]);
  const a = decodeBroadcastFrame(raw.buffer);
  assert.equal(a.topic, 'realtime:r');
  assert.equal(a.event, 'e');
  assert.deepEqual(a.meta, {});
  assert.ok(a.payload instanceof Uint8Array);
  assert.deepEqual([...a.payload], [9, 8, 7]);
  assert.equal(a.binary, true);

  const meta = Buffer.from('{"id":"m1","offset":4,"epoch":"ep"}');
  const body = Buffer.from('{"hello":"world"}');
  const topic = Buffer.from('realtime:room1');
  const json = Buffer.concat([Buffer.from([4, topic.length, 3, meta.length, 1]), topic, Buffer.from('evt'), meta, body]);
  const b = decodeBroadcastFrame(json);
  assert.deepEqual(b, { topic: 'realtime:room1', event: 'evt', meta: { id: 'm1', offset: 4, epoch: 'ep' }, payload: { hello: 'world' }, binary: false });

  assert.equal(decodeBroadcastFrame(new Uint8Array([3, 1, 1, 0, 0])), null, 'wrong kind');
  assert.equal(decodeBroadcastFrame(new Uint8Array([4, 200, 1, 0, 1, 65])), null, 'lying header');
  assert.equal(decodeBroadcastFrame(new Uint8Array([4, 1, 1, 0, 7, 65, 66])), null, 'bad encoding byte');
});

test('encodes kind-3 pushes as the server decodes them', () => {
  const frame = encodePushFrame({ joinRef: '6', ref: '8', topic: 'realtime:room1', event: 'evt', payload: new Uint8Array([1, 2]) });
  assert.equal(Buffer.from(frame).toString('hex'), `0301010e030000${Buffer.from('68realtime:room1evt').toString('hex')}0102`);
  const withMeta = encodePushFrame({ joinRef: '1', ref: '2', topic: 't', event: 'e', meta: { idempotency_key: 'k' }, payload: new Uint8Array([]) });
  assert.equal(withMeta[5], Buffer.byteLength('{"idempotency_key":"k"}'));
});

test('Deduper drops repeats by (epoch, offset) and by id, and tracks the position', () => {
  const d = new Deduper();
  assert.equal(d.accept({ id: 'a', offset: 1, epoch: 'e' }), true);
  assert.equal(d.accept({ id: 'b', offset: 2, epoch: 'e' }), true);
  assert.deepEqual(d.position, { epoch: 'e', offset: 2 });
  assert.equal(d.accept({ id: 'b', offset: 2, epoch: 'e' }), false, 'same message again');
  assert.equal(d.accept({ id: 'other', offset: 2, epoch: 'e' }), false, 'same position, other id');
  assert.equal(d.accept({ id: 'a' }), false, 'same id without a position');
  assert.equal(d.accept({ id: 'c' }), true, 'a new id without a position');
  assert.equal(d.accept({}), true, 'no meta at all: nothing to compare');
  assert.equal(d.accept({ id: 'x', offset: 2, epoch: 'f' }), true, 'same offset in another epoch');
  assert.deepEqual(d.position, { epoch: 'f', offset: 2 });
  assert.equal(d.duplicates, 3);
  // Out-of-order delivery (two overlapping streams) is accepted once per position.
  assert.equal(d.accept({ id: 'y', offset: 1, epoch: 'f' }), true);
  assert.equal(d.accept({ id: 'y', offset: 1, epoch: 'f' }), false);
  assert.deepEqual(d.position, { epoch: 'f', offset: 2 }, 'the position only moves forward');
});

test('BoundedSet forgets the oldest entries beyond its limit', () => {
  const s = new BoundedSet(3);
  for (const v of ['a', 'b', 'c', 'd']) s.add(v);
  assert.equal(s.has('a'), false);
  assert.equal(s.has('d'), true);
  assert.equal(s.items.size, 3);
});

test('PresenceState: state, then diffs with joins applied before leaves, metas replaced by phx_ref', () => {
  const p = new PresenceState();
  const first = p.syncState({ u1: { metas: [{ phx_ref: '1', status: 'away' }] }, u2: { metas: [{ phx_ref: '2' }] } });
  assert.deepEqual(first.joins.map((j) => j.key).sort(), ['u1', 'u2']);
  const before = p.state;
  // u1 changes state: the new meta joins (phx_ref_prev = old ref) and the old one leaves, in one diff.
  const change = p.syncDiff({
    joins: { u1: { metas: [{ phx_ref: '3', phx_ref_prev: '1', status: 'online' }] } },
    leaves: { u1: { metas: [{ phx_ref: '1', status: 'away' }] }, u2: { metas: [{ phx_ref: '2' }] } },
  });
  assert.deepEqual(p.state, { u1: [{ phx_ref: '3', phx_ref_prev: '1', status: 'online' }] });
  assert.notEqual(p.state, before, 'a new object after a change');
  assert.deepEqual(before.u1, [{ phx_ref: '1', status: 'away' }], 'old snapshots are not mutated');
  assert.equal(change.joins.length, 1);
  assert.equal(change.leaves.length, 2);
  assert.deepEqual(change.leaves.find((l) => l.key === 'u2').currentPresences, []);
  // A full state after a reconnect yields only the differences.
  const resync = p.syncState({ u1: { metas: [{ phx_ref: '3', phx_ref_prev: '1', status: 'online' }] }, u4: { metas: [{ phx_ref: '9' }] } });
  assert.deepEqual(resync.joins.map((j) => j.key), ['u4']);
  assert.deepEqual(resync.leaves, []);
  // Two tabs under one key: a leave removes only its own meta.
  p.syncDiff({ joins: { u4: { metas: [{ phx_ref: '10' }] } }, leaves: {} });
  assert.deepEqual(p.state.u4.map((m) => m.phx_ref), ['9', '10']);
  p.syncDiff({ joins: {}, leaves: { u4: { metas: [{ phx_ref: '9' }] } } });
  assert.deepEqual(p.state.u4.map((m) => m.phx_ref), ['10']);
});
