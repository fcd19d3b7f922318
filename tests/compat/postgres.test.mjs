// Postgres Changes with the unmodified realtime-js client against a real PostgreSQL, through a Herald
// process reading the database's logical replication stream: typed values, `eq` and `in` filters,
// INSERT/UPDATE/DELETE with old records (replica identity default and full), row level security
// per subscriber, rolled back transactions, savepoints and streamed transactions, a 1,000-row
// transaction, herald.send() broadcasts, a ~100 MB transaction in bounded memory, a PostgreSQL
// restart, and a Herald killed with SIGKILL and restarted on its data directory while a raw
// Phoenix client recovers from its last position. Every test has its own database and its own
// Herald (with its own replication slot) on the throwaway cluster of scripts/test
// (HERALD_TEST_DATABASE_URL); the restart test runs a private cluster.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { afterEach, describe, test } from 'node:test';
import { freshDatabase, startOwnPostgres } from '../support/postgres.mjs';
import { disconnectAll, makeClient, subscribed, uniqueTopic, VSNS, wire } from './lib/client.mjs';
import { decodeFrame } from './lib/frames.mjs';
import { startHerald } from './lib/herald.mjs';
import { RawSocket } from './lib/raw.mjs';
import { serviceToken, token } from './lib/tokens.mjs';
import { Inbox, waitFor } from './lib/wait.mjs';

/** How long a change may take from COMMIT to the subscriber (a debug build, two shared cores). */
const DELIVERY_MS = 15_000;
/** How long a join may take to report the postgres_changes subscription live. */
const LIVE_MS = 20_000;

const cleanups = []; // run last-in first-out after each test: Herald processes, then databases
const sockets = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.close();
  await disconnectAll();
  const errors = [];
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw new AggregateError(errors, `cleanup failed: ${errors.map((e) => e.message).join('; ')}`);
});

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The tail of `server`'s log, for failure messages. */
const logTail = (server, n = 4000) => `\nherald log tail:\n${server.logs().slice(-n)}`;

const ENSURE_PUBLICATION = `do $$
  begin
    if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
      create publication supabase_realtime;
    end if;
  end $$`;

/**
 * A fresh database (dropped after the test) where `ddl` has run and `tables` are in the
 * supabase_realtime publication.
 */
async function database(label, ddl, tables, { baseUrl } = {}) {
  const db = await freshDatabase(label, { baseUrl });
  cleanups.push(() => db.drop());
  await db.query(ddl);
  await db.query(ENSURE_PUBLICATION);
  for (const table of tables) await db.query(`alter publication supabase_realtime add table public.${table}`);
  return db;
}

/** A Herald reading `db` through its own slot, ready (GET /healthz), stopped after the test. */
async function heraldFor(db, { dataDir, env = {} } = {}) {
  const server = await startHerald({ env: { DATABASE_URL: db.url, HERALD_PG_SLOT: db.slot, ...env }, dataDir });
  cleanups.push(() => server.stop());
  return server;
}

/**
 * A realtime-js client authenticated with `jwt`, with one channel listening to `bindings`
 * (postgres_changes filters), subscribed and live: SUBSCRIBED, then the `system` message
 * {extension: 'postgres_changes', status: 'ok', message: 'Subscribed to PostgreSQL'}.
 * Returns { client, channel, inboxes (one per binding), changes (the first), all (every change in
 * arrival order, as { binding, payload }), system }.
 */
async function subscriber(server, bindings, { jwt = serviceToken(), vsn = '2.0.0', topic = uniqueTopic('db') } = {}) {
  const client = makeClient(server, { vsn, token: jwt });
  await client.setAuth(jwt);
  const channel = client.channel(topic);
  const all = new Inbox(`changes on ${topic}`);
  const inboxes = bindings.map((binding, i) => {
    const inbox = new Inbox(`changes for ${JSON.stringify(binding)} on ${topic}`);
    channel.on('postgres_changes', binding, (payload) => {
      inbox.push(payload);
      all.push({ binding: i, payload });
    });
    return inbox;
  });
  const system = new Inbox(`system messages on ${topic}`);
  channel.on('system', {}, (payload) => system.push(payload));
  await subscribed(channel, LIVE_MS);
  const live = await system.find(
    (p) => p?.extension === 'postgres_changes',
    LIVE_MS,
    () => `the postgres_changes system message on ${topic}; ${wire(client)}${logTail(server)}`,
  );
  assert.equal(live.status, 'ok', `postgres_changes system message: ${JSON.stringify(live)}; ${wire(client)}${logTail(server)}`);
  assert.equal(live.message, 'Subscribed to PostgreSQL', `system message: ${JSON.stringify(live)}`);
  return { client, channel, inboxes, changes: inboxes[0], all, system };
}

/** Waits for the first change in `inbox` whose `new` (or `old`) matches `predicate`. */
function changeWhere(inbox, predicate, sub, server, what, ms = DELIVERY_MS) {
  return inbox.find(
    (p) => predicate(p),
    ms,
    () => `${what} (have ${inbox.length} changes: ${describeChanges(inbox.items)}); ${wire(sub.client)}${logTail(server)}`,
  );
}

/** A compact list of received changes for failure messages. */
function describeChanges(items, last = 20) {
  const list = items.slice(-last).map((p) => `${p.eventType} ${p.table} new=${JSON.stringify(p.new)} old=${JSON.stringify(p.old)}`);
  return `${items.length > last ? '… ' : ''}[${list.join(', ')}]`;
}

/** The incoming postgres_changes frames `client` recorded, decoded. */
function changeFrames(client) {
  return client.tap.frames
    .filter((f) => f.dir === 'in' && f.text !== undefined)
    .map(decodeFrame)
    .filter((m) => m.event === 'postgres_changes');
}

/** Runs `sql` (with `params`) until the database accepts it (e.g. while PostgreSQL restarts). */
async function queryWhenUp(db, sql, params, ms = 30_000) {
  let last;
  await waitFor(
    async () => {
      try {
        await db.query(sql, params);
        return true;
      } catch (err) {
        last = err;
        return false;
      }
    },
    ms,
    () => `the database to accept \`${sql}\` (last error: ${last?.message})`,
  );
}

/** VmHWM and VmRSS of process `pid`, in bytes. */
async function memoryOf(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name) => {
    const m = status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'));
    assert.ok(m, `no ${name} in /proc/${pid}/status`);
    return Number(m[1]) * 1024;
  };
  return { hwm: field('VmHWM'), rss: field('VmRSS') };
}

const MiB = 1024 * 1024;
const mib = (bytes) => `${(bytes / MiB).toFixed(1)} MiB`;

describe('postgres_changes through realtime-js', () => {
  test('an INSERT arrives with typed values (numbers, booleans, JSON, arrays, timestamps, null)', { timeout: 90_000 }, async () => {
    const db = await database(
      'typed',
      `create table public.typed (
        id int8 primary key,
        i4 int4,
        f8 float8,
        num numeric,
        flag bool,
        body text,
        doc jsonb,
        raw json,
        at timestamptz,
        ints int4[],
        tags text[],
        uid uuid,
        nothing text
      )`,
      ['typed'],
    );
    const server = await heraldFor(db);
    const subs = [];
    for (const vsn of VSNS) {
      subs.push({ vsn, sub: await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'typed' }], { vsn }) });
    }

    const before = Date.now();
    await db.query(
      `insert into public.typed values (
        1234567890123, -42, 3.25, 12345.678, true, $1,
        '{"k": "v", "n": 1, "nested": {"x": true, "list": [1, "two", null]}}',
        '{"a": [1, 2, {"b": null}]}',
        '2024-02-29 12:34:56.789+00',
        '{1,2,3}', $2, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', null
      )`,
      ['héllo "wörld" ✓', ['a', 'b c', 'd,e']],
    );
    const after = Date.now();

    for (const { vsn, sub } of subs) {
      const [change] = await sub.changes.count(1, DELIVERY_MS, () => `the INSERT on vsn ${vsn}; ${wire(sub.client)}${logTail(server)}`);
      const at = `vsn ${vsn}: ${JSON.stringify(change)}`;
      assert.equal(change.eventType, 'INSERT', at);
      assert.equal(change.schema, 'public', at);
      assert.equal(change.table, 'typed', at);
      assert.equal(change.errors, null, at);
      assert.equal(typeof change.commit_timestamp, 'string', at);
      assert.match(change.commit_timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/, at);
      const committed = Date.parse(change.commit_timestamp);
      assert.ok(
        committed >= before - 60_000 && committed <= after + 60_000,
        `commit_timestamp ${change.commit_timestamp} is not around the time of the INSERT; ${at}`,
      );
      const { at: timestamp, ...rest } = change.new;
      assert.deepEqual(
        rest,
        {
          id: 1234567890123,
          i4: -42,
          f8: 3.25,
          num: 12345.678,
          flag: true,
          body: 'héllo "wörld" ✓',
          doc: { k: 'v', n: 1, nested: { x: true, list: [1, 'two', null] } },
          raw: { a: [1, 2, { b: null }] },
          ints: [1, 2, 3],
          tags: ['a', 'b c', 'd,e'],
          uid: 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
          nothing: null,
        },
        at,
      );
      assert.equal(typeof timestamp, 'string', `timestamptz should stay a string; ${at}`);
      assert.equal(Date.parse(timestamp), Date.parse('2024-02-29T12:34:56.789Z'), `timestamptz ${timestamp}; ${at}`);
      assert.deepEqual(change.old, {}, at);

      // On the wire: the column list with PostgreSQL type names (realtime-js converts by them).
      const frames = changeFrames(sub.client);
      assert.equal(frames.length, 1, `one postgres_changes frame on vsn ${vsn}; ${wire(sub.client)}`);
      const { ids, data } = frames[0].payload;
      assert.ok(Array.isArray(ids) && ids.length === 1, `ids: ${JSON.stringify(frames[0].payload)}`);
      assert.equal(data.type, 'INSERT');
      assert.deepEqual(
        data.columns.map(({ name, type }) => ({ name, type })),
        [
          { name: 'id', type: 'int8' },
          { name: 'i4', type: 'int4' },
          { name: 'f8', type: 'float8' },
          { name: 'num', type: 'numeric' },
          { name: 'flag', type: 'bool' },
          { name: 'body', type: 'text' },
          { name: 'doc', type: 'jsonb' },
          { name: 'raw', type: 'json' },
          { name: 'at', type: 'timestamptz' },
          { name: 'ints', type: '_int4' },
          { name: 'tags', type: '_text' },
          { name: 'uid', type: 'uuid' },
          { name: 'nothing', type: 'text' },
        ],
        `columns on vsn ${vsn}: ${JSON.stringify(data.columns)}`,
      );
    }
  });

  test("eq and in filters: only matching rows arrive (kind=eq.red, id=in.(1,3))", { timeout: 90_000 }, async () => {
    const db = await database('filters', 'create table public.items (id int8 primary key, kind text)', ['items']);
    const server = await heraldFor(db);
    const eq = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'items', filter: 'kind=eq.red' }]);
    const inList = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'items', filter: 'id=in.(1,3)' }]);

    // One transaction per row; (3, 'red') comes last and matches both filters.
    for (const [id, kind] of [[1, 'blue'], [2, 'red'], [4, 'green'], [5, 'red'], [6, 'blue'], [7, 'reddish'], [3, 'red']]) {
      await db.query('insert into public.items values ($1, $2)', [id, kind]);
    }

    await changeWhere(eq.changes, (p) => p.new.id === 3, eq, server, 'row 3 through kind=eq.red');
    await changeWhere(inList.changes, (p) => p.new.id === 3, inList, server, 'row 3 through id=in.(1,3)');
    assert.deepEqual(
      eq.changes.items.map((p) => [p.new.id, p.new.kind]),
      [[2, 'red'], [5, 'red'], [3, 'red']],
      `kind=eq.red delivered ${describeChanges(eq.changes.items)}`,
    );
    assert.deepEqual(
      inList.changes.items.map((p) => p.new.id),
      [1, 3],
      `id=in.(1,3) delivered ${describeChanges(inList.changes.items)}`,
    );
  });

  test('select trims the record to the columns asked for; a column the table lacks is refused at join', { timeout: 90_000 }, async () => {
    const db = await database(
      'select',
      `create table public.notes (id int8 primary key, title text, body text, secret text);
       alter table public.notes replica identity full;`,
      ['notes'],
    );
    const server = await heraldFor(db);
    const narrow = await subscriber(server, [{ event: '*', schema: 'public', table: 'notes', select: 'id,title' }]);
    const listed = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'notes', select: ['title'] }]);
    const whole = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'notes' }]);

    await db.query("insert into public.notes values (1, 'hello', 'long text', 'hidden')");
    await db.query("update public.notes set body = 'changed' where id = 1");
    await db.query('delete from public.notes where id = 1');

    const ins = await changeWhere(narrow.changes, (p) => p.eventType === 'INSERT', narrow, server, 'the insert, narrowed');
    assert.deepEqual(ins.new, { id: 1, title: 'hello' });
    const upd = await changeWhere(narrow.changes, (p) => p.eventType === 'UPDATE', narrow, server, 'the update, narrowed');
    assert.deepEqual([upd.new, upd.old], [{ id: 1, title: 'hello' }, { id: 1, title: 'hello' }]);
    const del = await changeWhere(narrow.changes, (p) => p.eventType === 'DELETE', narrow, server, 'the delete, narrowed');
    assert.deepEqual(del.old, { id: 1, title: 'hello' });
    const frame = changeFrames(narrow.client).find((m) => m.payload.data.type === 'INSERT');
    assert.deepEqual(frame.payload.data.columns.map((c) => c.name), ['id', 'title'], JSON.stringify(frame.payload.data));

    const one = await changeWhere(listed.changes, (p) => p.eventType === 'INSERT', listed, server, 'the insert, title only');
    assert.deepEqual(one.new, { title: 'hello' });
    const all = await changeWhere(whole.changes, (p) => p.eventType === 'INSERT', whole, server, 'the whole insert');
    assert.deepEqual(all.new, { id: 1, title: 'hello', body: 'long text', secret: 'hidden' });

    const client = makeClient(server, { token: serviceToken() });
    const channel = client.channel(uniqueTopic('bad'));
    const system = new Inbox('system messages for a bad select');
    channel.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'notes', select: 'id,nope' }, () => {});
    channel.on('system', {}, (payload) => system.push(payload));
    await subscribed(channel, LIVE_MS);
    const refusal = await system.find((p) => p?.extension === 'postgres_changes', LIVE_MS, () => `the refusal; ${wire(client)}${logTail(server)}`);
    assert.equal(refusal.status, 'error', JSON.stringify(refusal));
    assert.ok(String(refusal.message).includes('Error parsing `select` params: column `nope` does not exist in public.notes'), JSON.stringify(refusal));
  });

  test('the filter grammar: every operator, not., several conditions, \\, and a 100-value in, by column type', { timeout: 180_000 }, async () => {
    const db = await database(
      'grammar',
      `create table public.tasks (id int8 primary key, title text, status text, priority int4, score float8,
         done bool, due timestamptz, owner uuid, note text);
       create table public.marks (id int8 primary key)`,
      ['tasks', 'marks'],
    );
    const server = await heraldFor(db);
    const u1 = '0b9a6c1e-3f1d-4c55-9a43-1d2f6a7b8c01';
    const u2 = '7f00c2aa-5b6e-4f7d-8e21-9c3b4a5d6e02';
    const hundred = `id=in.(${[...range(1000, 1098), 3].join(',')})`;
    // Each filter with the ids it must deliver, out of the four rows below.
    const cases = [
      ['status=in.(open,closed)', [1, 2, 4]],
      ['status=not.in.(open,closed)', [3]],
      ['status=neq.open', [2, 3]],
      ['title=like.Urgent%', [1]],
      ['title=ilike.%urgent%', [1, 3]],
      ['title=not.ilike.%urgent%', [2, 4]],
      ['title=match.^[A-Z]+ d', [3]],
      ['title=imatch.^urgent', [1, 3]],
      ['priority=gte.2,priority=lt.5', [2, 3]],
      ['priority=lte.2,status=eq.open', [1]],
      ['score=gt.5', [1]],
      ['score=lt.0', [4]],
      ['done=is.true', [2]],
      ['done=is.null', [4]],
      ['done=not.is.true', [1, 3, 4]],
      ['done=eq.false', [1, 3]],
      ['due=lt.2026-07-01T00:00:00Z', [1, 2]],
      ['due=gte.2026-07-01 00:00:00+00', [3]],
      [`owner=eq.${u1}`, [1, 3]],
      [`owner=not.eq.${u1}`, [2]],
      ['note=isdistinct.x', [1, 2, 4]],
      ['note=not.isdistinct.x', [3]],
      ['note=eq.a\\,b', [2]],
      ['note=eq."comma, inside"', [4]],
      [hundred, [3]],
    ];
    const subs = [];
    for (const [filter] of cases) {
      subs.push(
        await subscriber(server, [
          { event: 'INSERT', schema: 'public', table: 'tasks', filter },
          { event: 'INSERT', schema: 'public', table: 'marks' },
        ]),
      );
    }
    await db.query(
      `insert into public.tasks values
         (1, 'Urgent: fix login', 'open', 1, 9.5, false, '2026-01-01 10:00:00+00', $1, null),
         (2, 'write docs', 'closed', 3, 2.25, true, '2026-06-01 00:00:00+00', $2, 'a,b'),
         (3, 'URGENT deploy', 'in review', 2, 5, false, '2027-01-01 00:00:00+00', $1, 'x'),
         (4, 'lunch', 'open', 5, -1, null, null, null, 'comma, inside')`,
      [u1, u2],
    );
    // Changes reach a subscriber in commit order: once the mark is there, every task row is too.
    await db.query('insert into public.marks values (1)');
    for (const [n, [filter, want]] of cases.entries()) {
      const sub = subs[n];
      await changeWhere(sub.inboxes[1], (p) => p.new.id === 1, sub, server, `the mark after ${filter}`);
      const got = sub.inboxes[0].items.map((p) => p.new.id).sort((a, b) => a - b);
      assert.deepEqual(got, want, `${filter} delivered ${describeChanges(sub.inboxes[0].items)}`);
    }

    // Filters that cannot work are refused at join with the reason, and deliver nothing.
    for (const [filter, reason] of [
      ['priority=eq.high', '`high` is not a valid int4 for column `priority`'],
      ['nope=eq.1', 'column `nope` does not exist'],
      ['title=match.(', 'invalid regular expression'],
      ['done=is.maybe', '`is` takes null, true or false'],
      ['title=near.x', 'unknown operator `near`'],
    ]) {
      const client = makeClient(server, { token: serviceToken() });
      const channel = client.channel(uniqueTopic('bad'));
      const system = new Inbox(`system messages for ${filter}`);
      channel.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'tasks', filter }, () => {});
      channel.on('system', {}, (payload) => system.push(payload));
      await subscribed(channel, LIVE_MS);
      const refusal = await system.find(
        (p) => p?.extension === 'postgres_changes',
        LIVE_MS,
        () => `the postgres_changes system message for ${filter}; ${wire(client)}${logTail(server)}`,
      );
      assert.equal(refusal.status, 'error', `${filter}: ${JSON.stringify(refusal)}`);
      assert.ok(String(refusal.message).includes(reason), `${filter}: ${JSON.stringify(refusal)}`);
    }
  });

  test("event '*': INSERT, UPDATE, DELETE in commit order; old records by replica identity", { timeout: 90_000 }, async () => {
    const db = await database(
      'events',
      `create table public.things (id int8 primary key, name text, qty int4);
       create table public.full_things (id int8 primary key, name text, qty int4);
       alter table public.full_things replica identity full;`,
      ['things', 'full_things'],
    );
    const server = await heraldFor(db);
    const sub = await subscriber(server, [
      { event: '*', schema: 'public', table: 'things' },
      { event: '*', schema: 'public', table: 'full_things' },
    ]);

    for (const table of ['things', 'full_things']) {
      await db.query(`insert into public.${table} values (1, 'a', 1)`);
      await db.query(`update public.${table} set name = 'b', qty = 2 where id = 1`);
      await db.query(`delete from public.${table} where id = 1`);
    }

    const got = await sub.all.count(
      6,
      DELIVERY_MS,
      () => `6 changes (have ${describeChanges(sub.all.items.map((c) => c.payload))}); ${wire(sub.client)}${logTail(server)}`,
    );
    const seen = got.map(({ binding, payload: p }) => ({ binding, table: p.table, eventType: p.eventType, new: p.new, old: p.old }));
    assert.deepEqual(seen, [
      { binding: 0, table: 'things', eventType: 'INSERT', new: { id: 1, name: 'a', qty: 1 }, old: {} },
      { binding: 0, table: 'things', eventType: 'UPDATE', new: { id: 1, name: 'b', qty: 2 }, old: { id: 1 } },
      { binding: 0, table: 'things', eventType: 'DELETE', new: {}, old: { id: 1 } },
      { binding: 1, table: 'full_things', eventType: 'INSERT', new: { id: 1, name: 'a', qty: 1 }, old: {} },
      { binding: 1, table: 'full_things', eventType: 'UPDATE', new: { id: 1, name: 'b', qty: 2 }, old: { id: 1, name: 'a', qty: 1 } },
      { binding: 1, table: 'full_things', eventType: 'DELETE', new: {}, old: { id: 1, name: 'b', qty: 2 } },
    ]);
    for (const { payload } of got) {
      assert.equal(payload.schema, 'public');
      assert.equal(payload.errors, null);
      assert.match(payload.commit_timestamp, /Z$/);
    }
  });

  test('row level security: each authenticated subscriber gets only its rows, service_role gets all', { timeout: 90_000 }, async () => {
    const db = await database(
      'rls',
      `create table public.notes (id bigserial primary key, owner text, body text);
       alter table public.notes enable row level security;
       create policy own_notes on public.notes for select to authenticated
         using (owner = current_setting('request.jwt.claims', true)::json->>'sub');
       create policy shared_notes on public.notes for select to authenticated using (owner = 'everyone');`,
      ['notes'],
    );
    const server = await heraldFor(db);
    const binding = [{ event: 'INSERT', schema: 'public', table: 'notes' }];
    const alice = await subscriber(server, binding, { jwt: token({ role: 'authenticated', sub: 'alice' }) });
    const bob = await subscriber(server, binding, { jwt: token({ role: 'authenticated', sub: 'bob' }) });
    const service = await subscriber(server, binding, { jwt: serviceToken() });

    const rows = [['alice', 'a1'], ['bob', 'b1'], ['carol', 'c1'], ['alice', 'a2'], ['bob', 'b2'], ['everyone', 'end']];
    for (const [owner, body] of rows) await db.query('insert into public.notes (owner, body) values ($1, $2)', [owner, body]);

    // 'end' is visible to every subscriber and committed last.
    for (const [name, sub, expected] of [
      ['alice', alice, ['a1', 'a2', 'end']],
      ['bob', bob, ['b1', 'b2', 'end']],
      ['service_role', service, ['a1', 'b1', 'c1', 'a2', 'b2', 'end']],
    ]) {
      await changeWhere(sub.changes, (p) => p.new.body === 'end', sub, server, `the shared row at ${name}`);
      assert.deepEqual(sub.changes.items.map((p) => p.new.body), expected, `${name} received ${describeChanges(sub.changes.items)}`);
    }
  });

  const undone = 'rolled back transactions, savepoints and streamed transactions deliver nothing of what was undone';
  test(undone, { timeout: 120_000 }, async () => {
    const db = await database('rollback', 'create table public.items (id int8 primary key, body text)', ['items']);
    const server = await heraldFor(db);
    const sub = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'items' }]);

    // A small transaction rolled back.
    await db.query('begin');
    await db.query("insert into public.items values (1, 'rolled back')");
    await db.query('rollback');
    // A large one (beyond logical_decoding_work_mem, so PostgreSQL streams it before it ends) rolled back.
    await db.query('begin');
    await db.query("insert into public.items select g, repeat('x', 200) from generate_series(10000, 11999) g");
    await db.query('rollback');
    // A rolled back savepoint inside a committed transaction.
    await db.query('begin');
    await db.query("insert into public.items values (3, 'kept')");
    await db.query('savepoint s');
    await db.query("insert into public.items values (4, 'undone')");
    await db.query('rollback to savepoint s');
    await db.query("insert into public.items values (5, 'kept')");
    await db.query('commit');
    // A streamed transaction with a rolled back savepoint.
    await db.query('begin');
    await db.query("insert into public.items select g, repeat('y', 200) from generate_series(100, 1099) g");
    await db.query('savepoint s');
    await db.query("insert into public.items select g, repeat('z', 200) from generate_series(20000, 20999) g");
    await db.query('rollback to savepoint s');
    await db.query("insert into public.items values (7, 'kept')");
    await db.query('commit');
    // The sentinel, committed last.
    await db.query("insert into public.items values (8, 'sentinel')");

    await changeWhere(sub.changes, (p) => p.new.id === 8, sub, server, 'the sentinel row 8', 60_000);
    const ids = sub.changes.items.map((p) => p.new.id);
    const expected = [3, 5, ...range(100, 1099), 7, 8];
    assert.deepEqual(
      ids,
      expected,
      `received ${ids.length} rows, expected ${expected.length}; ` +
        `undone ids received: ${JSON.stringify(ids.filter((id) => !expected.includes(id)).slice(0, 20))}`,
    );
  });

  test('1,000 rows in one transaction arrive complete and in order', { timeout: 120_000 }, async () => {
    const db = await database('thousand', 'create table public.items (id int8 primary key, body text)', ['items']);
    const server = await heraldFor(db);
    const sub = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'items' }]);

    await db.query("insert into public.items select g, 'row ' || g from generate_series(1, 1000) g");
    await db.query("insert into public.items values (1001, 'sentinel')");

    await changeWhere(sub.changes, (p) => p.new.id === 1001, sub, server, 'the sentinel row 1001', 60_000);
    const got = sub.changes.items.map((p) => p.new);
    assert.equal(got.length, 1001, `received ${got.length} rows`);
    assert.deepEqual(got.map((r) => r.id), range(1, 1001));
    assert.ok(got.slice(0, 1000).every((r) => r.body === `row ${r.id}`), 'row bodies');
    const commits = new Set(sub.changes.items.slice(0, 1000).map((p) => p.commit_timestamp));
    assert.equal(commits.size, 1, `one transaction, one commit_timestamp; got ${[...commits].slice(0, 5)}`);
  });

  test('herald.send() reaches broadcast subscribers of the topic; a rolled back send does not', { timeout: 90_000 }, async () => {
    const db = await database('send', 'create table public.gate (id int8 primary key)', ['gate']);
    const server = await heraldFor(db);
    // The gate subscription going live means the replication stream is being read.
    const gate = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'gate' }]);
    const room = gate.client.channel('room-db');
    const broadcasts = new Inbox('broadcasts on room-db');
    room.on('broadcast', { event: 'greet' }, (message) => broadcasts.push(message));
    await subscribed(room);

    const what = (label) => () => `${label} (have ${JSON.stringify(broadcasts.items)}); ${wire(gate.client)}${logTail(server)}`;
    const payloadOf = (message) => {
      assert.equal(message.type, 'broadcast', JSON.stringify(message));
      assert.equal(message.event, 'greet', JSON.stringify(message));
      const { id, ...rest } = message.payload;
      return rest;
    };

    await db.query(`select herald.send('{"hello":"db"}'::jsonb, 'greet', 'room-db', false)`);
    assert.deepEqual(payloadOf(await broadcasts.next(DELIVERY_MS, what('the committed send'))), { hello: 'db' });

    await db.query('begin');
    await db.query(`select herald.send('{"hello":"rolled back"}'::jsonb, 'greet', 'room-db', false)`);
    await db.query('rollback');
    await db.query(`select herald.send('{"hello":"after"}'::jsonb, 'greet', 'room-db', false)`);
    assert.deepEqual(payloadOf(await broadcasts.next(DELIVERY_MS, what('the send after the rollback'))), { hello: 'after' });
    assert.equal(broadcasts.length, 2, what('exactly two broadcasts')());
  });

  test('herald.broadcast_changes() in a row trigger broadcasts each change to a private channel', { timeout: 90_000 }, async () => {
    const db = await database(
      'trig',
      `create table public.gate (id int8 primary key);
       create table public.items (id int8 primary key, name text);
       create function public.items_broadcast() returns trigger language plpgsql as $$
       begin
         perform herald.broadcast_changes('items-db', tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
         return null;
       end $$;
       create trigger items_broadcast after insert or update or delete on public.items
         for each row execute function public.items_broadcast();`,
      ['gate'],
    );
    const server = await heraldFor(db);
    const gate = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'gate' }]);
    const room = gate.client.channel('items-db', { config: { private: true } });
    const got = new Inbox('broadcasts on items-db');
    room.on('broadcast', { event: '*' }, (message) => got.push(message));
    await subscribed(room);
    const what = (label) => () => `${label} (have ${JSON.stringify(got.items)}); ${logTail(server)}`;

    await db.query(`insert into public.items values (1, 'first')`);
    await db.query(`update public.items set name = 'renamed' where id = 1`);
    await db.query(`delete from public.items where id = 1`);
    const [ins, upd, del] = await got.count(3, DELIVERY_MS, what('three broadcasts'));
    assert.deepEqual([ins.event, upd.event, del.event], ['INSERT', 'UPDATE', 'DELETE']);
    const strip = ({ id, ...rest }) => rest;
    assert.deepEqual(strip(ins.payload), { operation: 'INSERT', schema: 'public', table: 'items', record: { id: 1, name: 'first' }, old_record: null });
    assert.deepEqual(strip(upd.payload), {
      operation: 'UPDATE', schema: 'public', table: 'items', record: { id: 1, name: 'renamed' }, old_record: { id: 1, name: 'first' },
    });
    assert.deepEqual(strip(del.payload), { operation: 'DELETE', schema: 'public', table: 'items', record: null, old_record: { id: 1, name: 'renamed' } });
  });

  test('a ~100 MB transaction is streamed without Herald holding it in memory', { timeout: 300_000 }, async () => {
    const db = await database('big', 'create table public.big (id int8 primary key, tag text, body text)', ['big']);
    const server = await heraldFor(db);
    const sub = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'big', filter: 'tag=eq.needle' }]);
    const rows = 100_000;

    const before = await memoryOf(server.pid);
    // 100,000 rows of ~1 KB in one statement: the first and the last are needles.
    await db.query(
      `insert into public.big
         select g, case when g in (1, $1) then 'needle' else 'hay' end, repeat(md5(g::text), 32)
         from generate_series(1, $1) g`,
      [rows],
    );
    await changeWhere(sub.changes, (p) => p.new.id === rows, sub, server, `the last row (${rows})`, 240_000);
    const after = await memoryOf(server.pid);
    await db.query(`insert into public.big values ($1, 'needle', 'sentinel')`, [rows + 1]);
    await changeWhere(sub.changes, (p) => p.new.id === rows + 1, sub, server, 'the sentinel row');

    assert.deepEqual(sub.changes.items.map((p) => p.new.id), [1, rows, rows + 1], `received ${describeChanges(sub.changes.items)}`);
    assert.equal(sub.changes.items[1].new.body.length, 1024);
    const grew = after.hwm - before.hwm;
    assert.ok(
      grew < 64 * MiB,
      `Herald's peak memory grew by ${mib(grew)} ` +
        `(VmHWM ${mib(before.hwm)} → ${mib(after.hwm)}, VmRSS ${mib(before.rss)} → ${mib(after.rss)})`,
    );
  });

  test('after PostgreSQL restarts, Herald reconnects and the same subscriber keeps receiving', { timeout: 180_000 }, async () => {
    const own = await startOwnPostgres();
    cleanups.push(() => own.stop());
    const db = await database('restart', 'create table public.items (id int8 primary key)', ['items'], { baseUrl: own.url });
    const server = await heraldFor(db);
    const sub = await subscriber(server, [{ event: 'INSERT', schema: 'public', table: 'items' }]);

    await db.query('insert into public.items values (1)');
    await changeWhere(sub.changes, (p) => p.new.id === 1, sub, server, 'row 1 before the restart');

    await own.restart();
    for (const id of [2, 3, 4]) await queryWhenUp(db, 'insert into public.items values ($1)', [id]);

    await changeWhere(sub.changes, (p) => p.new.id === 4, sub, server, 'row 4 after the restart', 90_000);
    assert.deepEqual(sub.changes.items.map((p) => p.new.id), [1, 2, 3, 4], `received ${describeChanges(sub.changes.items)}`);
  });
});

/**
 * A raw Phoenix client that subscribes to INSERTs on public.items with
 * postgres_changes_options.recover, remembers the last position of each log, and rejoins (on a
 * new socket, to a new server) from those positions. `deliveries` holds every change frame:
 * { conn, id, replayed, position, data }.
 */
class RecoveringSubscriber {
  constructor({ vsn, jwt, topic }) {
    this.vsn = vsn;
    this.jwt = jwt;
    this.topic = `realtime:${topic}`;
    this.positions = {};
    this.deliveries = [];
    this.joins = 0;
    this.raw = null;
  }

  frame(joinRef, ref, topic, event, payload) {
    return this.vsn === '2.0.0' ? [joinRef, ref, topic, event, payload] : { join_ref: joinRef, ref, topic, event, payload };
  }

  /** Opens a socket to `server`, joins with the remembered positions; resolves the system ok payload. */
  async join(server, ms = LIVE_MS) {
    this.raw?.close();
    const raw = await RawSocket.open(`${server.wsEndpoint('/socket')}/websocket?apikey=${this.jwt}&vsn=${this.vsn}`);
    sockets.push(raw);
    raw.ws.on('error', () => {}); // the server is killed under it: the close is what matters
    this.raw = raw;
    this.joins += 1;
    const conn = this.joins;
    const push = raw.inbox.push.bind(raw.inbox);
    raw.inbox.push = (message) => {
      push(message);
      if (message.event === 'postgres_changes' && message.topic === this.topic) this.record(conn, message);
    };
    const ref = `j${conn}`;
    raw.send(
      this.frame(ref, ref, this.topic, 'phx_join', {
        config: {
          broadcast: { self: false },
          presence: { key: '' },
          postgres_changes: [{ event: 'INSERT', schema: 'public', table: 'items' }],
          private: false,
          postgres_changes_options: { recover: { ...this.positions } },
        },
        access_token: this.jwt,
      }),
    );
    const reply = await raw.expect((m) => m.ref === ref && m.event === 'phx_reply', ms, `join reply (join ${conn})`);
    assert.equal(reply.payload?.status, 'ok', `join ${conn}: ${JSON.stringify(reply.payload)}${logTail(server)}`);
    const system = await raw.expect(
      (m) => m.topic === this.topic && m.event === 'system' && m.payload?.extension === 'postgres_changes',
      ms,
      `postgres_changes system message (join ${conn})${logTail(server)}`,
    );
    assert.equal(system.payload.status, 'ok', `join ${conn}: ${JSON.stringify(system.payload)}${logTail(server)}`);
    return system.payload;
  }

  record(conn, message) {
    const data = message.payload?.data ?? {};
    const position = data.position;
    this.deliveries.push({ conn, id: Number(data.record?.id), replayed: data.replayed === true, position, data });
    if (position?.log !== undefined) this.positions[position.log] = { epoch: position.epoch, offset: position.offset };
  }

  describe(last = 30) {
    return this.deliveries
      .slice(-last)
      .map((d) => `#${d.conn} id=${d.id}${d.replayed ? ' replayed' : ''} ${JSON.stringify(d.position)}`)
      .join('\n  ');
  }
}

describe('postgres_changes recovery across a Herald crash (raw Phoenix frames)', () => {
  test('Herald killed (SIGKILL) and restarted on its data directory: every row once, in order', { timeout: 180_000 }, async () => {
    const db = await database('recover', 'create table public.items (id int8 primary key)', ['items']);
    const first = await heraldFor(db);
    const sub = new RecoveringSubscriber({ vsn: '1.0.0', jwt: serviceToken(), topic: uniqueTopic('recover') });
    await sub.join(first);
    const total = 300;

    // Rows 1..150 go in at once; 151..200 once the first Herald is dead (it is down while they
    // commit); 201..300 once the second one answers, possibly before the subscriber rejoined.
    const gate = () => {
      let open;
      const opened = new Promise((r) => {
        open = r;
      });
      return { opened, open };
    };
    const killed = gate();
    const restarted = gate();
    let abandon = false;
    const inserted = [];
    const writer = (async () => {
      for (let id = 1; id <= total && !abandon; id += 1) {
        if (id === 151) await killed.opened;
        if (id === 201) await restarted.opened;
        if (abandon) return;
        await db.query('insert into public.items values ($1)', [id]);
        inserted.push(id);
      }
    })();
    writer.catch(() => {});

    let second;
    let recovery;
    let remembered;
    try {
      await waitFor(
        () => sub.deliveries.length >= 20,
        DELIVERY_MS,
        () => `20 rows before the kill; have:\n  ${sub.describe()}${logTail(first)}`,
      );
      await first.kill9();
      killed.open();
      remembered = { ...sub.positions['public.items'] };
      second = await heraldFor(db, { dataDir: first.dataDir });
      restarted.open();
      recovery = await sub.join(second, 60_000);
      await writer;
      await waitFor(
        () => sub.deliveries.some((d) => d.id === total),
        60_000,
        () => `row ${total} after the restart; inserted ${inserted.length}; have:\n  ${sub.describe()}${logTail(second)}`,
      );
    } finally {
      abandon = true;
      killed.open();
      restarted.open();
    }

    const where = () => `deliveries:\n  ${sub.describe(60)}`;
    // Every delivery carries a position in the public.items log, in one epoch, offsets rising.
    for (const d of sub.deliveries) {
      assert.equal(d.position?.log, 'public.items', `position of row ${d.id}: ${JSON.stringify(d.data)}`);
      assert.equal(typeof d.position.epoch, 'string', `epoch of row ${d.id}: ${JSON.stringify(d.position)}`);
      assert.ok(Number.isInteger(d.position.offset), `offset of row ${d.id}: ${JSON.stringify(d.position)}`);
    }
    const epochs = new Set(sub.deliveries.map((d) => d.position.epoch));
    assert.equal(epochs.size, 1, `one epoch across the restart (same data directory): ${[...epochs]}`);
    const offsets = sub.deliveries.map((d) => d.position.offset);
    assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), `offsets rise strictly; ${where()}`);

    // The rejoin recovered from the remembered position.
    assert.ok(remembered?.epoch !== undefined, 'a position was remembered before the kill');
    const rec = recovery.recovery?.['public.items'];
    assert.ok(rec, `recovery for public.items in the system message: ${JSON.stringify(recovery)}`);
    assert.equal(rec.recovered, true, JSON.stringify(recovery));
    assert.equal(rec.epoch, remembered.epoch, JSON.stringify(recovery));
    assert.ok(
      Number.isInteger(rec.offset) && rec.offset >= remembered.offset,
      `recovery top ${JSON.stringify(rec)} vs remembered ${JSON.stringify(remembered)}`,
    );
    // Nothing is replayed on the first join; on the second, exactly what is up to the top is.
    for (const d of sub.deliveries) {
      const shouldReplay = d.conn === 2 && d.position.offset <= rec.offset;
      assert.equal(d.replayed, shouldReplay, `row ${d.id} on join ${d.conn} (top ${rec.offset}) replayed=${d.replayed}; ${where()}`);
    }

    // Every row exactly once, in order.
    assert.deepEqual(inserted, range(1, total), 'the writer inserted every row');
    const ids = sub.deliveries.map((d) => d.id);
    const dup = ids.filter((id, i) => ids.indexOf(id) !== i);
    assert.deepEqual(dup, [], `rows delivered twice; ${where()}`);
    assert.deepEqual(ids, range(1, total), `missing: ${range(1, total).filter((id) => !ids.includes(id)).slice(0, 30)}; ${where()}`);
  });
});
