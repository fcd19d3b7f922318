// Realtime Authorization with the unmodified realtime-js client against a real PostgreSQL: private
// channels governed by row-level security policies on realtime.messages, written as Supabase's docs
// write them (a room per user through `(select auth.jwt() ->> 'sub')`, rules per extension, a lobby
// every authenticated user reads). Joins allowed and refused, sends allowed and refused (an ack'd
// send reports the refusal), presence governed by its extension, an access_token refresh to another
// user closing the channel, public channels unaffected, private_only, HTTP publishes and SSE streams
// checked like sockets, realtime.send and realtime.broadcast_changes from SQL reaching only readers,
// checks of many joins batched, and existing realtime.* / auth.* objects left untouched. Every test
// has its own database and Herald on the throwaway cluster of scripts/test (HERALD_TEST_DATABASE_URL).
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { freshDatabase } from '../support/postgres.mjs';
import { disconnectAll, listen, subscribed, wire } from './lib/client.mjs';
import { startHerald } from './lib/herald.mjs';
import { get, metric, post } from './lib/http.mjs';
import { presenceChannel, waitForKeys } from './lib/presence.mjs';
import { clientAs, firstStatus, privateMember } from './lib/private.mjs';
import { RawSocket } from './lib/raw.mjs';
import { recordEventSource } from './lib/sse.mjs';
import { serviceToken, token } from './lib/tokens.mjs';
import { Inbox, waitFor } from './lib/wait.mjs';

/** A join's answer, a broadcast or a presence event on a debug build sharing two cores. */
const MS = 10_000;
/** How long Herald may take to install its objects and report the database ready. */
const READY_MS = 30_000;

const cleanups = []; // last-in first-out after each test: clients, Herald processes, databases
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

/**
 * The policies of the suite, as Supabase's docs write them: each user reads and sends broadcasts in
 * their own room `room:<sub>` (no presence there); every authenticated user reads the lobby and
 * shares presence in it (no broadcasts); the stage shows presence to every authenticated user and
 * nothing else.
 */
const POLICIES = `
create policy "users read their own room" on realtime.messages
  for select to authenticated
  using ((select realtime.topic()) = 'room:' || (select auth.jwt() ->> 'sub'));
create policy "users send broadcasts in their own room" on realtime.messages
  for insert to authenticated
  with check ((select realtime.topic()) = 'room:' || (select auth.jwt() ->> 'sub')
              and realtime.messages.extension in ('broadcast'));
create policy "authenticated users read the lobby" on realtime.messages
  for select to authenticated
  using ((select realtime.topic()) = 'lobby');
create policy "authenticated users share presence in the lobby" on realtime.messages
  for insert to authenticated
  with check ((select realtime.topic()) = 'lobby' and realtime.messages.extension in ('presence'));
create policy "authenticated users see who is on stage" on realtime.messages
  for select to authenticated
  using ((select realtime.topic()) = 'stage' and realtime.messages.extension in ('presence'));
`;

const userToken = (sub, opts = {}) => token({ role: 'authenticated', sub, ...opts });
const refusal = (name) => `Unauthorized: You do not have permissions to read from this Channel topic: ${name}`;

/** Resolves once GET /healthz reports the database objects installed. */
async function databaseReady(server) {
  await waitFor(
    async () => (await get(server, '/healthz')).json?.postgres?.ready === true,
    READY_MS,
    () => `GET /healthz to report postgres.ready; herald log:\n${server.logs().slice(-3000)}`,
  );
}

/** A fresh database (dropped after the test) where `setup` ran before Herald starts. */
async function database(label, setup = '') {
  const db = await freshDatabase(label);
  cleanups.push(() => db.drop());
  if (setup) await db.query(setup);
  return db;
}

/** A Herald on `db` with its objects installed, then `policies` created; stopped after the test. */
async function heraldFor(db, { env = {}, policies = POLICIES } = {}) {
  const server = await startHerald({ env: { DATABASE_URL: db.url, HERALD_PG_SLOT: db.slot, ...env } });
  cleanups.push(() => server.stop());
  await databaseReady(server);
  if (policies) await db.query(policies);
  return server;
}

describe('joins of private channels follow the select policies', () => {
  test('a user joins their own room and the lobby, not another user\'s room; anon joins neither', async () => {
    const db = await database('authz_joins');
    const server = await heraldFor(db);

    await privateMember(server, userToken('alice'), 'room:alice');
    await privateMember(server, userToken('alice'), 'lobby');

    const bob = clientAs(server, userToken('bob'));
    const intruder = bob.channel('room:alice', { config: { private: true } });
    const refused = await firstStatus(intruder);
    assert.equal(refused.status, 'CHANNEL_ERROR', `bob joining room:alice; ${wire(bob)}`);
    assert.equal(refused.err?.message, refusal('room:alice'));

    const anon = clientAs(server, token({ role: 'anon' }));
    const lobby = anon.channel('lobby', { config: { private: true } });
    const anonRefused = await firstStatus(lobby);
    assert.equal(anonRefused.status, 'CHANNEL_ERROR', `anon joining the lobby; ${wire(anon)}`);
    assert.equal(anonRefused.err?.message, refusal('lobby'));
  });

  test('presence read alone admits a join only when presence is enabled, and brings the presence state', async () => {
    const db = await database('authz_stage');
    const server = await heraldFor(db);

    const watcher = clientAs(server, userToken('carol'));
    const stage = presenceChannel(watcher, 'stage', { key: 'carol', config: { private: true } });
    await subscribed(stage, MS);

    const performer = clientAs(server, serviceToken());
    const onStage = presenceChannel(performer, 'stage', { key: 'performer', config: { private: true } });
    await subscribed(onStage, MS);
    assert.equal(await onStage.track({ act: 1 }, { timeout: MS }), 'ok', wire(performer));
    await waitForKeys({ channel: stage, client: watcher }, ['performer'], MS, 'carol on stage');

    // Without presence, nothing on the stage is readable.
    const other = clientAs(server, userToken('dave'));
    const plain = other.channel('stage', { config: { private: true } });
    const refused = await firstStatus(plain);
    assert.equal(refused.status, 'CHANNEL_ERROR', wire(other));
    assert.equal(refused.err?.message, refusal('stage'));
  });

  test('public channels are not governed by the policies', async () => {
    const db = await database('authz_public');
    const server = await heraldFor(db);
    const anon = clientAs(server, token({ role: 'anon' }));
    const sender = anon.channel('room:alice', { config: { broadcast: { ack: true, self: true } } });
    const inbox = listen(sender);
    await subscribed(sender, MS);
    assert.equal(await sender.send({ type: 'broadcast', event: 'hi', payload: { n: 1 } }), 'ok', wire(anon));
    const got = await inbox.next(MS, () => `anon's own broadcast on public room:alice; ${wire(anon)}`);
    assert.deepEqual(got.payload, { n: 1 });
  });
});

describe('sends and presence follow the insert policies, per extension', () => {
  test('a user sends in their own room; a send the policy refuses is not delivered and an ack reports it', async () => {
    const db = await database('authz_send');
    const server = await heraldFor(db);
    const phone = await privateMember(server, userToken('alice'), 'room:alice');
    const laptop = await privateMember(server, userToken('alice'), 'room:alice');
    assert.equal(await laptop.channel.send({ type: 'broadcast', event: 'note', payload: { n: 1 } }), 'ok', wire(laptop.client));
    const got = await phone.inbox.next(MS, () => `alice's note on her other device; ${wire(phone.client)}`);
    assert.deepEqual(got.payload, { n: 1 });

    // Everyone reads the lobby, nobody may broadcast there but the service role.
    const alice = await privateMember(server, userToken('alice'), 'lobby');
    const bob = await privateMember(server, userToken('bob'), 'lobby');
    assert.equal(await bob.channel.send({ type: 'broadcast', event: 'shout', payload: { from: 'bob' } }), 'error', wire(bob.client));
    const host = await privateMember(server, serviceToken(), 'lobby');
    assert.equal(await host.channel.send({ type: 'broadcast', event: 'shout', payload: { from: 'host' } }), 'ok', wire(host.client));
    const first = await alice.inbox.next(MS, () => `the host's message in the lobby; ${wire(alice.client)}`);
    assert.deepEqual(first.payload, { from: 'host' }, 'the refused message reached the lobby before the allowed one');
  });

  test('presence may be tracked where the presence extension is allowed, and refused where only broadcasts are', async () => {
    const db = await database('authz_presence');
    const server = await heraldFor(db);

    const aliceClient = clientAs(server, userToken('alice'));
    const aliceLobby = presenceChannel(aliceClient, 'lobby', { key: 'alice', config: { private: true } });
    await subscribed(aliceLobby, MS);
    const bobClient = clientAs(server, userToken('bob'));
    const bobLobby = presenceChannel(bobClient, 'lobby', { key: 'bob', config: { private: true } });
    await subscribed(bobLobby, MS);
    assert.equal(await bobLobby.track({ status: 'here' }, { timeout: MS }), 'ok', wire(bobClient));
    await waitForKeys({ channel: aliceLobby, client: aliceClient }, ['bob'], MS, 'alice in the lobby');

    // Alice's room allows broadcasts only: her track there is refused with an empty error reply.
    const room = presenceChannel(aliceClient, 'room:alice', { key: 'alice', config: { private: true } });
    await subscribed(room, MS);
    assert.equal(await room.track({ status: 'here' }, { timeout: MS }), 'error', wire(aliceClient));
    const reply = aliceClient.tap.frames
      .filter((f) => f.dir === 'in' && f.text?.includes('"phx_reply"') && f.text.includes('room:alice'))
      .map((f) => JSON.parse(f.text))
      .map((f) => (Array.isArray(f) ? f[4] : f.payload))
      .find((p) => p.status === 'error');
    assert.deepEqual(reply, { status: 'error', response: {} }, wire(aliceClient));
  });
});

describe('a refreshed access_token runs the policies again', () => {
  test('switching the socket to another user closes the room of the first with a system message', async () => {
    const db = await database('authz_refresh');
    const server = await heraldFor(db);
    const m = await privateMember(server, userToken('alice'), 'room:alice');
    const lobby = m.client.channel('lobby', { config: { private: true } });
    const lobbySystem = new Inbox('system messages on the lobby');
    lobby.on('system', {}, (payload) => lobbySystem.push(payload));
    await subscribed(lobby, MS);

    // A new token of the same user keeps the room.
    await m.client.setAuth(userToken('alice', { ttl: 7200 }));
    await m.client.setAuth(userToken('bob'));
    const message = await m.system.find((p) => p.status === 'error', MS, () => `a system error on room:alice; ${wire(m.client)}`);
    assert.equal(message.message, 'You no longer have permission to read from this Channel topic: room:alice');
    await m.statuses.find((s) => s.status === 'CLOSED', MS, () => `room:alice closed; ${wire(m.client)}`);
    assert.equal(m.channel.state, 'closed');

    // Bob may read the lobby too: it stays open, with nothing said. (A push answered after the
    // token's pushes shows the lobby's check is done: the connection handles its frames in order.)
    assert.equal(await lobby.track({ who: 'bob' }, { timeout: MS }), 'ok', wire(m.client));
    assert.equal(lobby.state, 'joined', wire(m.client));
    assert.equal(lobbySystem.length, 0, JSON.stringify(lobbySystem.items));
  });
});

describe('private_only', () => {
  test('public channels are refused, private ones follow the policies', async () => {
    const db = await database('authz_private_only');
    const server = await heraldFor(db, { env: { HERALD_PRIVATE_ONLY: 'true' } });
    const alice = clientAs(server, userToken('alice'));
    const open = alice.channel('lobby');
    const refused = await firstStatus(open);
    assert.equal(refused.status, 'CHANNEL_ERROR', wire(alice));
    assert.equal(refused.err?.message, 'PrivateOnly: This project only allows private channels');
    await privateMember(server, userToken('alice'), 'lobby');
  });
});

describe('HTTP publishes and SSE streams of private channels', () => {
  test('a message the insert policy refuses is skipped (still 202); one it allows is delivered', async () => {
    const db = await database('authz_http');
    const server = await heraldFor(db);
    const m = await privateMember(server, userToken('alice'), 'room:alice');
    const send = (jwt, n) =>
      post(server, '/api/broadcast', {
        token: jwt,
        json: { messages: [{ topic: 'room:alice', event: 'note', payload: { n }, private: true }] },
      });
    assert.equal((await send(userToken('bob'), 1)).status, 202);
    assert.equal((await send(userToken('alice'), 2)).status, 202);
    const first = await m.inbox.next(MS, () => `alice's HTTP note; ${wire(m.client)}`);
    assert.deepEqual(first.payload, { n: 2 }, 'bob\'s refused message was delivered');
  });

  test('a private stream needs the read policy', async () => {
    const db = await database('authz_sse');
    const server = await heraldFor(db);
    const stream = (jwt) =>
      fetch(`${server.httpUrl}/sse?topic=room:alice&private=true`, {
        headers: { authorization: `Bearer ${jwt}` },
        signal: AbortSignal.timeout(MS),
      });
    const refused = await stream(userToken('bob'));
    assert.equal(refused.status, 403);
    assert.match(await refused.text(), /You do not have permissions to read from this Channel topic: room:alice/);

    const es = recordEventSource(`${server.httpUrl}/sse?topic=room:alice&private=true&access_token=${userToken('alice')}`);
    cleanups.push(() => es.close());
    await es.opens.next(MS, 'alice\'s private stream to open');
    const sent = await post(server, '/api/broadcast', {
      token: serviceToken(),
      json: { messages: [{ topic: 'room:alice', event: 'note', payload: { n: 7 }, private: true }] },
    });
    assert.equal(sent.status, 202);
    const got = await es.events.find((e) => e.type === 'broadcast', MS, 'the note on alice\'s stream');
    assert.deepEqual(got.data.payload, { n: 7 });
  });
});

describe('broadcast from SQL', () => {
  test('realtime.send and realtime.broadcast_changes reach private readers, not the public channel of the same name; the caller\'s insert policy applies', async () => {
    const db = await database(
      'authz_sql',
      `create table public.notes (id bigint primary key, body text not null);
       alter table public.notes enable row level security;`,
    );
    const server = await heraldFor(db);
    await db.query(`
      create function public.notes_broadcast() returns trigger language plpgsql as $$
      begin
        perform realtime.broadcast_changes('room:alice', tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
        return null;
      end $$;
      create trigger notes_broadcast after insert or update or delete on public.notes
        for each row execute function public.notes_broadcast();`);
    const m = await privateMember(server, userToken('alice'), 'room:alice');
    const outsider = clientAs(server, token({ role: 'anon' }));
    const publicRoom = outsider.channel('room:alice');
    const publicInbox = listen(publicRoom);
    await subscribed(publicRoom, MS);

    await db.query(`select realtime.send('{"text":"hello"}'::jsonb, 'greeting', 'room:alice')`);
    const hello = await m.inbox.next(MS, () => `realtime.send's message; ${wire(m.client)}`);
    assert.equal(hello.event, 'greeting');
    assert.equal(hello.payload.text, 'hello');
    assert.match(hello.payload.id, /^[0-9a-f-]{36}$/, 'realtime.send adds an id');

    await db.query(`insert into public.notes values (1, 'first')`);
    const change = await m.inbox.next(MS, () => `the trigger's broadcast; ${wire(m.client)}`);
    assert.equal(change.event, 'INSERT');
    assert.deepEqual(
      { operation: change.payload.operation, table: change.payload.table, schema: change.payload.schema, record: change.payload.record, old_record: change.payload.old_record },
      { operation: 'INSERT', table: 'notes', schema: 'public', record: { id: 1, body: 'first' }, old_record: null },
    );

    // realtime.send runs with the caller's rights: bob's insert policy refuses room:alice, alice's allows it.
    const asUser = async (sub, sql) => {
      const c = await db.connect();
      try {
        await c.query('begin');
        await c.query(`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)`, [
          JSON.stringify({ sub, role: 'authenticated' }),
        ]);
        await c.query(sql);
        await c.query('commit');
      } finally {
        await c.end();
      }
    };
    await asUser('bob', `select realtime.send('{"from":"bob"}'::jsonb, 'note', 'room:alice')`);
    await asUser('alice', `select realtime.send('{"from":"alice"}'::jsonb, 'note', 'room:alice')`);
    const note = await m.inbox.next(MS, () => `alice's note sent from SQL; ${wire(m.client)}`);
    assert.equal(note.payload.from, 'alice', 'a message the insert policy refuses was sent');

    // The public channel of the same name got none of them: its first message is the public one.
    await db.query(`select realtime.send('{"text":"everyone"}'::jsonb, 'greeting', 'room:alice', false)`);
    const first = await publicInbox.next(MS, () => `the public message; ${wire(outsider)}`);
    assert.equal(first.payload.text, 'everyone', 'a private message reached the public channel');
  });
});

describe('checks of many joins', () => {
  test('joins arriving together are checked in fewer statements than joins', async () => {
    const db = await database('authz_batch');
    const server = await heraldFor(db, { env: { HERALD_PG_POOL_SIZE: '1' } });
    const count = 40;
    const raws = [];
    for (let i = 0; i < count; i += 1) {
      const raw = await RawSocket.open(`${server.wsEndpoint()}/websocket?apikey=${userToken(`u${i}`)}&vsn=1.0.0`);
      sockets.push(raw);
      raws.push(raw);
    }
    const before = (await metric(server, 'herald_pg_authz_queries_total')) ?? 0;
    raws.forEach((raw, i) =>
      raw.send({ topic: 'realtime:lobby', event: 'phx_join', payload: { config: { private: true } }, ref: '1', join_ref: '1' }),
    );
    for (const [i, raw] of raws.entries()) {
      const reply = await raw.expect((f) => f.event === 'phx_reply' && f.ref === '1', MS, `join reply ${i}`);
      assert.equal(reply.payload.status, 'ok', JSON.stringify(reply.payload));
    }
    const queries = (await metric(server, 'herald_pg_authz_queries_total')) - before;
    assert.ok(queries < count, `${count} joins took ${queries} statements`);
  });
});

describe('existing objects', () => {
  test('Herald creates nothing that exists and alters nothing', async () => {
    const db = await database(
      'authz_existing',
      `create schema realtime;
       create table realtime.messages (
         topic text not null, extension text not null, payload jsonb, event text,
         private boolean default false, updated_at timestamp not null default now(),
         inserted_at timestamp not null default now(), id uuid not null default gen_random_uuid(),
         binary_payload bytea, tenant text default 'mine', primary key (id, inserted_at));
       alter table realtime.messages enable row level security;
       grant usage on schema realtime to anon, authenticated, service_role;
       grant select, insert on realtime.messages to anon, authenticated, service_role;
       create function realtime.topic() returns text language sql stable
         as $$ select nullif(current_setting('realtime.topic', true), '') $$;
       create table public.sent (payload jsonb, event text, topic text);
       create function realtime.send(payload jsonb, event text, topic text, private boolean default true)
         returns void language sql as $$ insert into public.sent values (payload, event, topic) $$;
       create schema auth;
       grant usage on schema auth to anon, authenticated, service_role;
       create function auth.jwt() returns jsonb language sql stable
         as $$ select jsonb_build_object('sub', 'everyone') $$;`,
    );
    const definitions = `select p.proname, pg_get_functiondef(p.oid) as def from pg_proc p
      where p.pronamespace in ('realtime'::regnamespace, 'auth'::regnamespace) and p.proname in ('send', 'topic', 'jwt')
      order by 1`;
    const before = (await db.query(definitions)).rows;
    const server = await heraldFor(db);
    assert.deepEqual((await db.query(definitions)).rows, before, 'an existing function was replaced');
    const columns = await db.query(
      `select column_name from information_schema.columns where table_schema = 'realtime' and table_name = 'messages' and column_name = 'tenant'`,
    );
    assert.equal(columns.rowCount, 1, 'the existing realtime.messages lost its column');
    const comment = await db.query(`select obj_description('realtime.messages'::regclass, 'pg_class') as c`);
    assert.equal(comment.rows[0].c, null, 'Herald marked an existing realtime.messages as its own');
    await db.query(`select realtime.send('{"a":1}'::jsonb, 'e', 't')`);
    assert.equal((await db.query('select count(*)::int as n from public.sent')).rows[0].n, 1, 'the existing realtime.send no longer runs');

    // The functions Herald adds where missing sit beside the existing ones, and the policies use them.
    const added = await db.query(`select count(*)::int as n from pg_proc where pronamespace = 'auth'::regnamespace and proname in ('uid', 'role')`);
    assert.equal(added.rows[0].n, 2);
    // The existing auth.jwt() says every token's sub is "everyone": the room of "everyone" opens to bob.
    await privateMember(server, userToken('bob'), 'room:everyone');
  });
});
