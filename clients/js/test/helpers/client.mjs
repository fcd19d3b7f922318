// Clients for the integration tests: Node's missing WebSocket and EventSource come from the `ws`
// and `eventsource` packages; no storage, no window; short backoff so reconnects are quick.
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { Herald } from '../../herald.js';
import { Inbox, waitFor } from './wait.mjs';

export { EventSource, WebSocket };

/** A Herald client whose states and logged warnings/errors are recorded. */
export function heraldClient(url, options = {}) {
  const logs = [];
  const client = new Herald(url, {
    WebSocket,
    EventSource,
    storage: null,
    window: null,
    document: null,
    backoff: { baseMs: 50, capMs: 400 },
    logger: (level, message, detail) => {
      if (level === 'warn' || level === 'error') logs.push({ level, message, detail });
    },
    ...options,
  });
  const states = [];
  client.on('state', (s) => states.push(s));
  client.states = states;
  client.logs = logs;
  return client;
}

/** Records every broadcast of `channel` in an Inbox. */
export function recordBroadcasts(channel, name = `broadcasts of ${channel.name}`) {
  const inbox = new Inbox(name);
  channel.on('broadcast', '*', (m) => inbox.push(m));
  return inbox;
}

/** Waits until `client` enters `state` after its `from`-th recorded state. */
export function waitState(client, state, ms, from = 0) {
  return waitFor(
    () => client.states.slice(from).some((s) => s.state === state) || client.state.state === state,
    ms,
    () => `state ${state} (states: ${client.states.map((s) => s.state).join(' → ')})`,
  );
}

/** Resolves when `channel` is joined. */
export function joined(channel, ms = 5000) {
  return waitFor(channel.ready(), ms, `channel ${channel.name} to be joined (status ${channel.status})`);
}

/** The `n` payload fields of recorded broadcasts. */
export const ns = (inbox) => inbox.items.map((m) => m.payload?.n);

/** Messages { topic, event, payload: { n } } for n in from..to. */
export function numbered(topic, from, to, event = 'e') {
  const out = [];
  for (let n = from; n <= to; n += 1) out.push({ topic, event, payload: { n } });
  return out;
}
