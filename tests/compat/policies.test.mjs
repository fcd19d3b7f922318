// Policy rules without a database: `[[policies]]` in the configuration file decide what a token
// may do on a private channel (read, write, presence), per topic pattern with the token's claims
// filled in, and per role. The unmodified realtime-js client, the `eventsource` package and plain
// HTTP publishes meet the same rules.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { disconnectAll, subscribed, wire } from './lib/client.mjs';
import { startHerald } from './lib/herald.mjs';
import { post } from './lib/http.mjs';
import { presenceChannel, waitForKeys } from './lib/presence.mjs';
import { clientAs as privateClientAs, firstStatus, privateMember } from './lib/private.mjs';
import { recordEventSource } from './lib/sse.mjs';
import { serviceToken, token } from './lib/tokens.mjs';

/** A join's answer, a broadcast or a presence event on a debug build sharing two cores. */
const MS = 10_000;

/** The rules of the suite, as docs/authorization.md shows them. */
const CONFIG = `
# Each user reads and sends in their own room.
[[policies]]
topics = "room:{sub}"
roles = ["authenticated"]
allow = ["read", "write"]

# Members of an organisation read its channels; only its chat takes messages and presence.
[[policies]]
topics = "org:{claims.org_id}:*"
roles = ["authenticated"]
allow = ["read"]

[[policies]]
topics = "org:{claims.org_id}:chat"
roles = ["authenticated"]
allow = ["write", "presence"]

# The stage shows who is on it, and nothing else.
[[policies]]
topics = "stage"
allow = ["presence"]
`;

const user = (sub, extra = {}) => token({ role: 'authenticated', sub, extra });
const refusal = (name) => `Unauthorized: You do not have permissions to read from this Channel topic: ${name}`;

let server;
let dir;
const closers = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'herald-policies-'));
  const file = join(dir, 'herald.toml');
  await writeFile(file, CONFIG);
  server = await startHerald({ args: ['--config', file] });
});

after(async () => {
  for (const c of closers.splice(0)) c();
  await disconnectAll();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const clientAs = (jwt) => privateClientAs(server, jwt);
const member = (jwt, name, config) => privateMember(server, jwt, name, config);

describe('joins follow the rules', () => {
  test('a user joins their own room and their organisation\'s channels, nothing else', async () => {
    await member(user('alice'), 'room:alice');
    await member(user('alice', { org_id: 7 }), 'org:7:news');

    for (const [jwt, name] of [
      [user('alice'), 'room:bob'],
      [user('alice', { org_id: 7 }), 'org:8:news'],
      [user('carol'), 'org:7:news'], // no org_id claim: the rule names nothing for her
      [token({ role: 'anon', sub: 'alice' }), 'room:alice'], // the rule is for authenticated users
      [user('alice'), 'stage'], // presence only: a join without presence reads nothing
    ]) {
      const client = clientAs(jwt);
      const status = await firstStatus(client.channel(name, { config: { private: true } }));
      assert.equal(status.status, 'CHANNEL_ERROR', `${name}: ${wire(client)}`);
      assert.equal(status.err?.message, refusal(name));
    }
  });

  test('public channels and the service role are not governed by the rules', async () => {
    const anon = clientAs(token({ role: 'anon' }));
    const open = anon.channel('room:bob', { config: { broadcast: { self: true, ack: true } } });
    await subscribed(open, MS);
    assert.equal(await open.send({ type: 'broadcast', event: 'hi', payload: {} }), 'ok', wire(anon));
    await member(serviceToken(), 'room:bob');
  });
});

describe('sends and presence follow the rules', () => {
  test('a read-only channel refuses sends; the chat takes them and presence', async () => {
    const reader = await member(user('alice', { org_id: 'acme' }), 'org:acme:news');
    const other = await member(user('bob', { org_id: 'acme' }), 'org:acme:news');
    assert.equal(await other.channel.send({ type: 'broadcast', event: 'note', payload: { n: 1 } }), 'error', wire(other.client));
    const host = await member(serviceToken(), 'org:acme:news');
    assert.equal(await host.channel.send({ type: 'broadcast', event: 'note', payload: { n: 2 } }), 'ok', wire(host.client));
    const first = await reader.inbox.next(MS, () => `the host's note; ${wire(reader.client)}`);
    assert.deepEqual(first.payload, { n: 2 }, 'the refused note was delivered');

    const aliceClient = clientAs(user('alice', { org_id: 'acme' }));
    const chat = presenceChannel(aliceClient, 'org:acme:chat', { key: 'alice', config: { private: true } });
    await subscribed(chat, MS);
    const bobClient = clientAs(user('bob', { org_id: 'acme' }));
    const bobChat = presenceChannel(bobClient, 'org:acme:chat', { key: 'bob', config: { private: true } });
    await subscribed(bobChat, MS);
    assert.equal(await bobChat.track({ typing: true }, { timeout: MS }), 'ok', wire(bobClient));
    await waitForKeys({ channel: chat, client: aliceClient }, ['bob'], MS, 'alice in the chat');

    // Presence is not granted in a user's room.
    const room = presenceChannel(aliceClient, 'room:alice', { key: 'alice', config: { private: true } });
    await subscribed(room, MS);
    assert.equal(await room.track({ here: true }, { timeout: MS }), 'error', wire(aliceClient));
  });

  test('the stage admits a join with presence and shows who is on it', async () => {
    const watcherClient = clientAs(user('dave'));
    const watcher = presenceChannel(watcherClient, 'stage', { key: 'dave', config: { private: true } });
    await subscribed(watcher, MS);
    const actorClient = clientAs(user('erin'));
    const actor = presenceChannel(actorClient, 'stage', { key: 'erin', config: { private: true } });
    await subscribed(actor, MS);
    assert.equal(await actor.track({ act: 1 }, { timeout: MS }), 'ok', wire(actorClient));
    await waitForKeys({ channel: watcher, client: watcherClient }, ['erin'], MS, 'dave watching the stage');
  });
});

describe('a refreshed token meets the rules again', () => {
  test('switching the socket to another user closes the first user\'s room', async () => {
    const m = await member(user('alice'), 'room:alice');
    await m.client.setAuth(user('bob'));
    const message = await m.system.find((p) => p.status === 'error', MS, () => `a system error on room:alice; ${wire(m.client)}`);
    assert.equal(message.message, 'You no longer have permission to read from this Channel topic: room:alice');
    await m.statuses.find((s) => s.status === 'CLOSED', MS, () => `room:alice closed; ${wire(m.client)}`);
  });
});

describe('HTTP publishes and SSE streams meet the same rules', () => {
  test('a publish the rules refuse is 403 naming the topic; an allowed one is delivered', async () => {
    const m = await member(user('alice'), 'room:alice');
    const send = (jwt, n) =>
      post(server, '/api/broadcast', {
        token: jwt,
        json: { messages: [{ topic: 'room:alice', event: 'note', payload: { n }, private: true }] },
      });
    const refused = await send(user('bob'), 1);
    assert.equal(refused.status, 403);
    assert.match(refused.text, /You do not have permissions to write to this Channel topic: room:alice/);
    assert.equal((await send(user('alice'), 2)).status, 202);
    const got = await m.inbox.next(MS, () => `alice's HTTP note; ${wire(m.client)}`);
    assert.deepEqual(got.payload, { n: 2 });
  });

  test('a private stream needs read; presence on the stage needs presence=true', async () => {
    const stream = (query, jwt) =>
      fetch(`${server.httpUrl}/sse?${query}`, {
        headers: { authorization: `Bearer ${jwt}` },
        signal: AbortSignal.timeout(MS),
      });
    const refused = await stream('topic=room:alice&private=true', user('bob'));
    assert.equal(refused.status, 403);
    assert.match(await refused.text(), /You do not have permissions to read from this Channel topic: room:alice/);
    const noPresence = await stream('topic=stage&private=true', user('bob'));
    assert.equal(noPresence.status, 403);
    await noPresence.arrayBuffer();
    const withPresence = await stream('topic=stage&private=true&presence=true', user('bob'));
    assert.equal(withPresence.status, 200);
    await withPresence.body.cancel();

    const es = recordEventSource(`${server.httpUrl}/sse?topic=room:alice&private=true&access_token=${user('alice')}`);
    closers.push(() => es.close());
    await es.opens.next(MS, 'alice\'s private stream to open');
    const sent = await post(server, '/api/broadcast', {
      token: user('alice'),
      json: { messages: [{ topic: 'room:alice', event: 'note', payload: { n: 7 }, private: true }] },
    });
    assert.equal(sent.status, 202);
    const got = await es.events.find((e) => e.type === 'broadcast', MS, 'the note on alice\'s stream');
    assert.deepEqual(got.data.payload, { n: 7 });
  });
});
