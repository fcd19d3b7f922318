// React hooks with a real renderer (react-dom on jsdom) against a real Herald: StrictMode's double
// mount leaves exactly one live subscription, unmount releases it, hooks send, receive, track.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { JSDOM } from 'jsdom';
import { startHerald } from './helpers/herald.mjs';
import { anonToken } from './helpers/tokens.mjs';
import { Inbox, waitFor } from './helpers/wait.mjs';
import { WebSocket, heraldClient, joined, numbered, recordBroadcasts } from './helpers/client.mjs';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
if (!globalThis.navigator) globalThis.navigator = dom.window.navigator;

const { StrictMode, createElement: h, useState } = await import('react');
const { createRoot } = await import('react-dom/client');
const { HeraldProvider, useBroadcast, useChannel, useConnectionState, usePostgresChanges, usePresence } = await import(
  '../react.js'
);

let server;
const clients = [];
const roots = [];

before(async () => {
  server = await startHerald();
});

after(async () => {
  for (const r of roots) r.unmount();
  for (const c of clients) c.disconnect();
  await server?.stop();
});

/** A WebSocket that records the text frames the client sends. */
function recordingWebSocket() {
  const sent = [];
  class RecordingWebSocket extends WebSocket {
    send(data, ...rest) {
      if (typeof data === 'string') sent.push(JSON.parse(data));
      return super.send(data, ...rest);
    }
  }
  return { RecordingWebSocket, sent };
}

function client(options = {}) {
  const c = heraldClient(server.httpUrl, { token: anonToken(), transports: ['websocket'], ...options });
  clients.push(c);
  return c;
}

function render(element) {
  const container = document.createElement('div');
  document.body.appendChild(container);
  const root = createRoot(container);
  roots.push(root);
  root.render(element);
  return {
    container,
    unmount() {
      roots.splice(roots.indexOf(root), 1);
      root.unmount();
    },
  };
}

test('StrictMode double mount: exactly one live subscription; unmount releases it', async () => {
  const { RecordingWebSocket, sent } = recordingWebSocket();
  const c = client({ WebSocket: RecordingWebSocket });
  let channelCalls = 0;
  const channel = c.channel.bind(c);
  c.channel = (...args) => {
    channelCalls += 1;
    return channel(...args);
  };
  const received = new Inbox('received by the component');
  let send = null;
  function Room() {
    send = useBroadcast('react-strict', 'chat', (m) => received.push(m.payload));
    const { state } = useConnectionState();
    return h('span', null, state);
  }
  const view = render(h(StrictMode, null, h(HeraldProvider, { client: c }, h(Room))));
  await waitFor(() => view.container.textContent === 'live', 5000, () => `"live" rendered (have "${view.container.textContent}")`);
  assert.equal(channelCalls, 2, 'StrictMode mounted the effect twice');
  await waitFor(async () => (await server.subscribers('react-strict')) === 1, 5000, 'one subscriber on the server');
  assert.deepEqual(c.channels().map((i) => [i.name, i.handles, i.status]), [['react-strict', 1, 'joined']]);
  assert.equal(sent.filter((f) => f[3] === 'phx_join').length, 1, 'one phx_join');
  assert.equal(sent.filter((f) => f[3] === 'phx_leave').length, 0, 'no phx_leave');

  // The hook receives, and its send function publishes.
  await server.publish(numbered('react-strict', 1, 1, 'chat'));
  assert.deepEqual(await received.count(1, 3000), [{ n: 1 }]);
  const other = client();
  const ch = other.channel('react-strict');
  const got = recordBroadcasts(ch);
  ch.subscribe();
  await joined(ch);
  const result = await send({ n: 2 });
  const [echo] = await got.count(1, 3000);
  assert.deepEqual(echo.payload, { n: 2 });
  assert.deepEqual(result, { status: 'ok', offset: 2, epoch: echo.meta.epoch });
  await waitFor(async () => (await server.subscribers('react-strict')) === 2, 3000, 'two subscribers');
  other.disconnect();
  await waitFor(async () => (await server.subscribers('react-strict')) === 1, 3000, 'back to one subscriber');

  view.unmount();
  await waitFor(async () => (await server.subscribers('react-strict')) === 0, 5000, 'no subscriber after unmount');
  assert.deepEqual(c.channels(), []);
  assert.equal(sent.filter((f) => f[3] === 'phx_leave').length, 1);
});

test('history through a hook: recent messages on mount; a `since` computed in render does not resubscribe', async () => {
  await server.publish(numbered('react-history', 1, 5, 'chat'));
  const { RecordingWebSocket, sent } = recordingWebSocket();
  const c = client({ WebSocket: RecordingWebSocket });
  let channelCalls = 0;
  const channel = c.channel.bind(c);
  c.channel = (...args) => {
    channelCalls += 1;
    return channel(...args);
  };
  let renders = 0;
  let send = null;
  function Room() {
    renders += 1;
    const [messages, setMessages] = useState([]);
    send = useBroadcast('react-history', 'chat', (m) => setMessages((all) => [...all, m.payload.n]), {
      history: { since: Date.now() - 60_000, limit: 3 },
    });
    const { presences } = usePresence('react-history', { presence: { key: 'alice' }, state: { status: 'online' } });
    return h('p', null, `${Object.keys(presences).length} here: ${messages.join(',')}`);
  }
  const view = render(h(StrictMode, null, h(HeraldProvider, { client: c }, h(Room))));
  await waitFor(() => view.container.textContent === '1 here: 3,4,5', 5000, () => `the history rendered ("${view.container.textContent}")`);
  await server.publish(numbered('react-history', 6, 6, 'chat'));
  await waitFor(() => view.container.textContent === '1 here: 3,4,5,6', 3000, () => `a live message ("${view.container.textContent}")`);
  await send({ n: 7 });
  assert.ok(renders >= 4, `re-rendered (${renders})`);
  const joins = sent.filter((f) => f[3] === 'phx_join' && f[2] === 'realtime:react-history');
  assert.equal(joins.length, 1, 'one join across the re-renders');
  assert.equal(channelCalls, 4, 'each hook took its handle once per StrictMode mount, not once per render');
  assert.equal(joins[0][4].config.broadcast.replay.limit, 3);
  assert.equal(joins[0][4].config.presence.key, 'alice', 'the hooks share the join');
  view.unmount();
  await waitFor(async () => (await server.subscribers('react-history')) === 0, 5000, 'released');
});

test('usePresence tracks while mounted; useChannel and usePostgresChanges report status', async () => {
  const { RecordingWebSocket, sent } = recordingWebSocket();
  const c = client({ WebSocket: RecordingWebSocket });
  const seen = [];
  function Member({ name }) {
    const { presences, status } = usePresence('react-presence', { presence: { key: name }, state: { name } });
    seen.push(Object.keys(presences).sort().join(','));
    return h('li', null, `${name}:${status}:${Object.keys(presences).sort().join(',')}`);
  }
  function Db() {
    const { status } = usePostgresChanges('react-db', { event: 'INSERT', schema: 'public', table: 'todos' }, () => {});
    const { status: plain } = useChannel('react-plain');
    return h('p', null, `${status}/${plain}`);
  }
  const alice = render(h(StrictMode, null, h(HeraldProvider, { client: c }, h(Member, { name: 'alice' }), h(Db))));
  const other = client();
  const bob = render(h(HeraldProvider, { client: other }, h(Member, { name: 'bob' })));
  await waitFor(() => alice.container.textContent.includes('alice:joined:alice,bob'), 5000, () => `both present (alice sees "${alice.container.textContent}")`);
  await waitFor(() => bob.container.textContent === 'bob:joined:alice,bob', 5000, () => `bob sees both ("${bob.container.textContent}")`);
  assert.ok(alice.container.textContent.endsWith('joined/joined'));
  const dbJoin = sent.find((f) => f[3] === 'phx_join' && f[2] === 'realtime:react-db');
  assert.deepEqual(dbJoin[4].config.postgres_changes, [{ event: 'INSERT', schema: 'public', table: 'todos' }]);
  const presenceJoins = sent.filter((f) => f[3] === 'phx_join' && f[2] === 'realtime:react-presence');
  assert.equal(presenceJoins.length, 1, 'StrictMode did not join twice');
  bob.unmount();
  await waitFor(() => alice.container.textContent.startsWith('alice:joined:alice') && !alice.container.textContent.includes('bob'), 5000, () => `bob left ("${alice.container.textContent}")`);
  const state = await server.get('/api/channels/react-presence/presence');
  assert.deepEqual(Object.keys(state.state), ['alice']);
  assert.equal(state.state.alice.metas.length, 1, 'one meta despite the double mount');
  alice.unmount();
  await waitFor(async () => (await server.subscribers('react-presence')) === 0, 5000, 'presence channel released');
});

test('a provider given a url owns its client: one connection under StrictMode, disconnected on unmount', async () => {
  function Status() {
    const { status } = useChannel('react-owned');
    const { state, transport } = useConnectionState();
    return h('b', null, `${state}/${transport}/${status}`);
  }
  let sockets = 0;
  class CountingWebSocket extends WebSocket {
    constructor(...args) {
      super(...args);
      sockets += 1;
    }
  }
  const options = { token: anonToken(), transports: ['websocket'], WebSocket: CountingWebSocket, window: null, document: null, storage: null };
  const view = render(h(StrictMode, null, h(HeraldProvider, { url: server.httpUrl, options }, h(Status))));
  await waitFor(() => view.container.textContent === 'live/websocket/joined', 5000, () => `joined ("${view.container.textContent}")`);
  await waitFor(async () => (await server.subscribers('react-owned')) === 1, 3000, 'one subscriber');
  assert.equal(sockets, 1, 'one WebSocket despite the double mount');
  view.unmount();
  await waitFor(async () => (await server.subscribers('react-owned')) === 0, 5000, 'the owned client disconnected');
});
