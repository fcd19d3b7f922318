// realtime-js clients for the tests: construction with the `ws` transport (Node 20 has no global
// WebSocket), frame recording, subscribe/listen helpers, and cleanup of every client created.
import { RealtimeClient, RealtimeChannel } from '@supabase/realtime-js';
import { formatFrames, tappedTransport } from './frames.mjs';
import { anonToken } from './tokens.mjs';
import { Inbox, waitFor } from './wait.mjs';

export { RealtimeChannel };
export const VSNS = ['1.0.0', '2.0.0'];

const DISCONNECT_MS = 3000;
const MAX_LOG = 300;
const live = new Set();
let topicCounter = 0;

/** A topic name no other test uses. */
export function uniqueTopic(prefix = 'room') {
  topicCounter += 1;
  return `${prefix}-${process.pid}-${topicCounter}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Creates a RealtimeClient for `server`. `client.tap` holds the recorded frames and log lines.
 * The socket connects on the first subscribe(), or right away with `connect: true`.
 */
export function makeClient(server, { vsn = '2.0.0', token = anonToken(), path = '/socket', connect = false, ...options } = {}) {
  const tap = { frames: [], logs: [] };
  const client = new RealtimeClient(server.wsEndpoint(path), {
    params: { apikey: token },
    transport: tappedTransport(tap.frames),
    vsn,
    logger: (kind, msg, data) => {
      if (tap.logs.length >= MAX_LOG) tap.logs.shift();
      tap.logs.push(`${kind}: ${msg}`);
    },
    ...options,
  });
  client.tap = tap;
  live.add(client);
  if (connect) client.connect();
  return client;
}

/** Frames and logs of `client`, for failure messages. */
export function wire(client) {
  return `frames (vsn ${client.vsn}):\n${formatFrames(client.tap.frames)}`;
}

/** Subscribes `channel`; returns an Inbox of { status, err } reported by realtime-js. */
export function subscribe(channel) {
  const statuses = new Inbox(`statuses of ${channel.topic}`);
  channel.subscribe((status, err) => statuses.push({ status, err }));
  channel.statuses = statuses;
  return statuses;
}

/** Subscribes `channel` and waits for SUBSCRIBED; throws with the wire log on anything else. */
export async function subscribed(channel, ms = 5000) {
  const statuses = subscribe(channel);
  const first = await statuses.next(ms, () => `SUBSCRIBED on ${channel.topic}; ${wire(channel.socket)}`);
  if (first.status !== 'SUBSCRIBED') {
    throw new Error(
      `expected SUBSCRIBED on ${channel.topic}, got ${first.status}` +
        `${first.err ? ` (${first.err.message})` : ''}; ${wire(channel.socket)}`,
    );
  }
  return statuses;
}

/** Collects the broadcasts `channel` delivers for `event` ('*' for all). Call before subscribe. */
export function listen(channel, event = '*') {
  const inbox = new Inbox(`broadcasts on ${channel.topic}`);
  channel.on('broadcast', { event }, (message) => inbox.push(message));
  return inbox;
}

/** Waits for the next broadcast in `inbox`, with the client's frames in the failure message. */
export function nextBroadcast(inbox, client, ms = 5000, what = 'a broadcast') {
  return inbox.next(ms, () => `${what} on ${inbox.name}; ${wire(client)}`);
}

/** Disconnects every client made with makeClient (stops their reconnect timers). */
export async function disconnectAll() {
  const clients = [...live];
  live.clear();
  await Promise.all(
    clients.map((client) =>
      waitFor(client.disconnect(), DISCONNECT_MS, 'client disconnect').catch(() => {}),
    ),
  );
}

