// The README, tried as a newcomer would: its commands run exactly as printed from the repository
// root (the test command itself aside), its snippets run with the locked client packages against the
// server its first command started, and each does what the README says it does. The server listens
// on 127.0.0.1:4000 because the README says so; only the data directory is a temporary one.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';

import { Inbox, waitFor } from '../support/wait.mjs';
import {
  REPO_ROOT,
  blockIn,
  fencedBlocks,
  newcomerEnv,
  portIsFree,
  runModule,
  runShell,
  withoutComment,
} from './lib/readme.mjs';

const README = join(REPO_ROOT, 'README.md');
const ORIGIN = 'http://127.0.0.1:4000';
// `cargo run` may have to build first.
const START_MS = 600_000;
const STEP_MS = 30_000;

const blocks = fencedBlocks(README);
const dataDir = mkdtempSync(join(tmpdir(), 'herald-docs-'));
// The README's commands keep their state in ./data; the check keeps it out of the work tree.
const env = newcomerEnv({ HERALD_DATA_DIR: dataDir });
const runs = [];
let server;
let anon;
let serviceRole;

function track(run) {
  runs.push(run);
  return run;
}

/** A realtime-js subscriber of the test's own on `topic`, collecting `event` broadcasts. */
async function subscriber(topic, event) {
  const client = new RealtimeClient(`${ORIGIN.replace('http', 'ws')}/socket`, {
    params: { apikey: anon },
    transport: WebSocket,
  });
  const inbox = new Inbox(`${topic} ${event}`);
  const channel = client.channel(topic);
  channel.on('broadcast', { event }, (m) => inbox.push(m.payload));
  await waitFor(
    new Promise((ok, fail) =>
      channel.subscribe((status, err) => {
        if (status === 'SUBSCRIBED') ok();
        else if (status !== 'CLOSED') fail(new Error(`${status}: ${err?.message}`));
      }),
    ),
    STEP_MS,
    `the test's subscriber on ${topic}`,
  );
  return { inbox, close: () => client.disconnect() };
}

async function publish(topic, event, payload) {
  const res = await fetch(`${ORIGIN}/api/broadcast/${topic}/events/${event}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${serviceRole}`, 'content-type': 'application/json' },
    body: JSON.stringify(payload),
  });
  assert.equal(res.status, 202, await res.text());
}

describe('README', () => {
  before(async () => {
    assert.ok(
      await portIsFree(4000),
      'port 4000 is in use: the README runs Herald on 127.0.0.1:4000, so the docs check needs it free',
    );
  });

  after(async () => {
    for (const run of runs.reverse()) await run.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('the first command runs Herald, prints its URLs and tokens, and serves the demo at http://127.0.0.1:4000', async () => {
    const lines = blockIn(blocks, 'Herald', 'sh').trim().split('\n');
    assert.equal(lines.length, 2, 'the README starts with exactly two set-up commands');
    assert.equal(withoutComment(lines[1]), 'scripts/test', 'the second command runs every test');
    const command = withoutComment(lines[0]);
    server = track(runShell(command, command, env));
    const tokens = await server.waitForOutput(/anon token:\s+(\S+)\n\s+service_role token:\s+(\S+)\n/, START_MS);
    [, anon, serviceRole] = tokens;
    await server.waitForOutput(`demo:      ${ORIGIN}/`, STEP_MS);
    await server.waitForOutput(`admin:     ${ORIGIN}/admin`, STEP_MS);
    const demo = await fetch(`${ORIGIN}/`);
    assert.equal(demo.status, 200);
    assert.match(await demo.text(), /<html/i);
    assert.equal((await fetch(`${ORIGIN}/admin`)).status, 200);
    // A clean first start: Herald's own lines only, none of the embedded store's.
    const said = server.stdout + server.stderr;
    for (const noise of ['Creating database', 'ingestion writer', 'lsm_tree', 'fjall']) {
      assert.ok(!said.includes(noise), `the start printed the store's "${noise}" line:\n${server.output()}`);
    }
  });

  test('the supabase-js quick start, pasted with the printed anon token, receives its own broadcast and its ack', async () => {
    const code = blockIn(blocks, 'Quick start with supabase-js', 'js');
    assert.ok(code.includes("'<the anon token Herald printed>'"), 'the quick start has a token placeholder');
    const quick = track(
      runModule('the quick start', 'quickstart.mjs', code.replace("'<the anon token Herald printed>'", `'${anon}'`)),
    );
    await quick.waitForOutput("got { text: 'hi' }", STEP_MS);
    await quick.waitForOutput(/^ok$/m, STEP_MS);
    await quick.stop();
  });

  test('realtime-js on its own, constructed as the README shows, joins a channel', async () => {
    const prose = /`(new RealtimeClient\([^`]+\))`/.exec(readFileSync(README, 'utf8'));
    assert.ok(prose, 'the README shows a RealtimeClient construction');
    const code = [
      "import { RealtimeClient } from '@supabase/realtime-js'",
      "import WebSocket from 'ws'",
      'globalThis.WebSocket = WebSocket // what a browser or Node 22 provides',
      `const ANON = '${anon}'`,
      `const client = ${prose[1]}`,
      "client.channel('room1').subscribe((status) => console.log(status))",
    ].join('\n');
    const run = track(runModule('the RealtimeClient line', 'realtime.mjs', code));
    await run.waitForOutput('SUBSCRIBED', STEP_MS);
    await run.stop();
  });

  test('the curl publishes answer 202 and reach a subscriber of room1', async () => {
    const sub = await subscriber('room1', 'chat');
    try {
      const script = blockIn(blocks, 'Publish from a server', 'sh');
      const run = track(runShell('the curl block', script, env));
      const { code } = await run.finished(START_MS);
      assert.equal(code, 0, run.output());
      const statuses = run.stdout.match(/^HTTP\/1\.1 \d+ .*$/gm) ?? [];
      assert.deepEqual(
        statuses.map((s) => s.trim()),
        ['HTTP/1.1 202 Accepted', 'HTTP/1.1 202 Accepted'],
        run.output(),
      );
      assert.deepEqual(await sub.inbox.next(STEP_MS), { text: 'hello from curl' });
      assert.deepEqual(await sub.inbox.next(STEP_MS), { text: 'one message' });
    } finally {
      sub.close();
    }
  });

  test('the EventSource example, with the eventsource package, prints broadcasts of both topics', async () => {
    const code = blockIn(blocks, 'Listen with Server-Sent Events', 'js');
    const source = [
      "import { EventSource as Base } from 'eventsource'",
      // The check's only addition: a line when the stream is open, so that it publishes after that.
      "globalThis.EventSource = class extends Base { constructor(...a) { super(...a); this.addEventListener('open', () => console.log('[open]')) } }",
      `const ANON = '${anon}'`,
      code,
    ].join('\n');
    const run = track(runModule('the EventSource example', 'sse.mjs', source));
    await run.waitForOutput('[open]', STEP_MS);
    await publish('room1', 'chat', { text: 'hello from curl' });
    await publish('alerts', 'fire', { level: 2 });
    await run.waitForOutput("room1 chat { text: 'hello from curl' }", STEP_MS);
    await run.waitForOutput('alerts fire { level: 2 }', STEP_MS);
    await run.stop();
  });

  test('herald token mints the token the Tokens section describes, and Herald accepts it', async () => {
    const prose = /`(herald token [^`]+)`/.exec(readFileSync(README, 'utf8'));
    assert.ok(prose, 'the README shows a herald token command');
    const bin = join(REPO_ROOT, 'target', 'debug');
    const token = execFileSync('bash', ['-c', prose[1]], {
      cwd: REPO_ROOT,
      env: { ...env, PATH: `${bin}:${process.env.PATH}` },
      encoding: 'utf8',
    }).trim();
    const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
    assert.equal(claims.role, 'authenticated');
    assert.equal(claims.sub, 'user-42');
    const now = Math.floor(Date.now() / 1000);
    assert.ok(Math.abs(claims.exp - (now + 3600)) < 60, `exp ${claims.exp} is not an hour from now`);
    // "Private channels ... to every role except anon": this token may join one.
    const client = new RealtimeClient(`${ORIGIN.replace('http', 'ws')}/socket`, {
      params: { apikey: token },
      transport: WebSocket,
    });
    try {
      const status = await waitFor(
        new Promise((ok) =>
          client.channel('private-room', { config: { private: true } }).subscribe((s) => s !== 'CLOSED' && ok(s)),
        ),
        STEP_MS,
        'the private join',
      );
      assert.equal(status, 'SUBSCRIBED');
    } finally {
      client.disconnect();
    }
  });
  test('the Postgres Changes section: a server given a database streams an insert of todos to the snippet, and realtime.send reaches room1', async () => {
    const admin = process.env.HERALD_TEST_DATABASE_URL;
    assert.ok(admin, 'HERALD_TEST_DATABASE_URL is not set (scripts/test starts a throwaway PostgreSQL and sets it)');
    const name = `herald_docs_${process.pid}`;
    const psql = (url, sql) => execFileSync('psql', [url, '-qAtc', sql], { encoding: 'utf8' });
    psql(admin, `create database ${name}`);
    const url = `${admin.slice(0, admin.lastIndexOf('/'))}/${name}`;
    let pgServer;
    try {
      // The database the section presumes: a todos table, and the roles of docs/postgres.md's set-up.
      psql(url, 'create table todos (id bigserial primary key, title text not null, done boolean not null default false)');
      psql(url, "do $$ begin if not exists (select from pg_roles where rolname = 'anon') then create role anon nologin; end if; end $$");
      const [serveLine, ...psqlLines] = blockIn(blocks, 'Postgres Changes', 'sh').trim().split('\n');
      const printedUrl = /^DATABASE_URL=(\S+) /.exec(serveLine)?.[1];
      assert.ok(printedUrl, `the section starts Herald with DATABASE_URL: ${serveLine}`);
      for (const line of psqlLines) assert.match(line, /^psql app -c /);
      // The only changes: this check's database in place of the example's, and its own slot.
      await server.stop();
      pgServer = track(runShell('the Postgres serve line', serveLine.replace(printedUrl, url), { ...env, HERALD_PG_SLOT: name }));
      await pgServer.waitForOutput('service_role token:', START_MS);
      await waitFor(
        async () => (await (await fetch(`${ORIGIN}/healthz`)).json()).postgres?.streaming,
        STEP_MS,
        'the replication stream',
      );
      for (const line of psqlLines) {
        const ran = runShell(line, withoutComment(line).replace('psql app', `psql '${url}'`), env);
        assert.equal((await ran.finished(STEP_MS)).code, 0, ran.output());
      }

      const quick = blockIn(blocks, 'Quick start with supabase-js', 'js');
      const client = quick.slice(0, quick.indexOf('\n})\n') + 4).replace("'<the anon token Herald printed>'", `'${anon}'`);
      const snippet = blockIn(blocks, 'Postgres Changes', 'js');
      const source = [
        client,
        // The check's only addition: a line once the channel is subscribed.
        'const channel = supabase.channel.bind(supabase)',
        "supabase.channel = (...a) => { const c = channel(...a); const s = c.subscribe.bind(c); c.subscribe = (cb) => s((status, e) => { console.log('[status]', status); cb?.(status, e) }); return c }",
        snippet,
      ].join('\n');
      const run = track(runModule('the postgres_changes snippet', 'postgres.mjs', source));
      await run.waitForOutput('[status] SUBSCRIBED', STEP_MS);
      psql(url, "insert into todos (title) values ('buy milk')");
      psql(url, "insert into todos (title, done) values ('filtered out', true)");
      psql(url, "insert into todos (title) values ('call mum')");
      await run.waitForOutput("INSERT { id: 1, title: 'buy milk', done: false } {}", STEP_MS);
      await run.waitForOutput("INSERT { id: 3, title: 'call mum', done: false } {}", STEP_MS);
      assert.ok(!run.stdout.includes('filtered out'), `the filter done=eq.false let a done row through:\n${run.output()}`);
      await run.stop();

      const send = /`(select realtime\.send\([^`]+\))`/.exec(readFileSync(README, 'utf8'));
      assert.ok(send, 'the section shows a realtime.send call');
      const sub = await subscriber('room1', 'chat');
      try {
        psql(url, send[1]);
        // The message's id rides along in the payload, as with Supabase's realtime.send.
        const { id, ...payload } = await sub.inbox.next(STEP_MS);
        assert.deepEqual(payload, { text: 'hi' });
        assert.match(id, /^[0-9a-f-]{36}$/);
      } finally {
        sub.close();
      }
    } finally {
      await pgServer?.stop();
      psql(admin, `select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = '${name}'`);
      psql(admin, `drop database if exists ${name} with (force)`);
    }
  });

});
