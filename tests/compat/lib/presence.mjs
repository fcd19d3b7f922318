// Presence helpers on top of realtime-js: a member (client + channel with presence listeners),
// views of presenceState(), and deadline-based waits on what a member sees.
import assert from 'node:assert/strict';
import { makeClient, subscribed, wire } from './client.mjs';
import { decodeFrame } from './frames.mjs';
import { Inbox, waitFor } from './wait.mjs';

/**
 * Creates a channel on `client` for `name` with `config.presence.key = key` and a listener for
 * every presence event. `channel.presenceEvents` collects { event, key, currentPresences,
 * newPresences | leftPresences } as realtime-js reports them ('sync' has only `event`);
 * `channel.systemEvents` collects the payloads of `system` messages.
 */
export function presenceChannel(client, name, { key = '', config = {}, listen = true } = {}) {
  const channel = client.channel(name, { config: { ...config, presence: { key, ...(config.presence ?? {}) } } });
  const events = new Inbox(`presence events on ${name}`);
  if (listen) channel.on('presence', { event: '*' }, (payload) => events.push(payload));
  channel.presenceEvents = events;
  const system = new Inbox(`system events on ${name}`);
  channel.on('system', {}, (payload) => system.push(payload));
  channel.systemEvents = system;
  return channel;
}

/**
 * A joined member: a new client (options go to makeClient), a subscribed channel with presence
 * listeners, and, when `payload` is given, a track() that must resolve 'ok'.
 * Returns { client, channel, events, system, statuses, key }.
 */
export async function member(server, name, { key = '', payload, config, listen = true, ...clientOptions } = {}) {
  const client = makeClient(server, clientOptions);
  const channel = presenceChannel(client, name, { key, config, listen });
  const statuses = await subscribed(channel);
  if (payload !== undefined) {
    const result = await channel.track(payload, { timeout: 5000 });
    assert.equal(result, 'ok', `track() on ${name} (key "${key}"); ${wire(client)}`);
  }
  return { client, channel, events: channel.presenceEvents, system: channel.systemEvents, statuses, key };
}

/** presenceState() of `channel` with its keys sorted, for stable comparisons and messages. */
export function sortedState(channel) {
  const state = channel.presenceState();
  return Object.fromEntries(Object.keys(state).sort().map((k) => [k, state[k]]));
}

/** The sorted keys of presenceState(). */
export const stateKeys = (channel) => Object.keys(channel.presenceState()).sort();

/** The metas under `key` with realtime-js's `presence_ref` removed (the user payloads). */
export function payloadsOf(channel, key) {
  return (channel.presenceState()[key] ?? []).map(({ presence_ref, ...rest }) => rest);
}

/**
 * Waits until `predicate(presenceState())` holds for `m` (a member or a channel). The failure
 * message shows the last state seen and the client's frames.
 */
export async function waitForState(m, predicate, ms, what) {
  const channel = m.channel ?? m;
  let last;
  try {
    return await waitFor(
      () => {
        last = channel.presenceState();
        return predicate(last) ? last : false;
      },
      ms,
      what,
    );
  } catch (err) {
    err.message += `\nlast presenceState: ${JSON.stringify(last)}\n${wire(channel.socket)}`;
    throw err;
  }
}

/** Waits until the presence keys of `m` are exactly `keys` (any order). */
export function waitForKeys(m, keys, ms = 5000, who = 'member') {
  const want = [...keys].sort();
  return waitForState(
    m,
    (state) => {
      const have = Object.keys(state).sort();
      return have.length === want.length && have.every((k, i) => k === want[i]);
    },
    ms,
    `${who} to see exactly the keys ${JSON.stringify(want)}`,
  );
}

/** The presence event of `m` matching `predicate`, taken or not. */
export function waitForEvent(m, predicate, ms, what) {
  const channel = m.channel ?? m;
  return channel.presenceEvents.find(
    predicate,
    ms,
    () => `${what}; presence events: ${JSON.stringify(channel.presenceEvents.items.slice(-10))}\n${wire(channel.socket)}`,
  );
}

/**
 * Decoded frames `client` received on `topic` (full "realtime:..." topic) with `event` (any when
 * undefined), among its recorded frames from index `from` on.
 */
export function received(client, topic, event, from = 0) {
  return client.tap.frames
    .slice(from)
    .filter((f) => f.dir === 'in')
    .map(decodeFrame)
    .filter((m) => m.topic === topic && (event === undefined || m.event === event));
}

/** A v1 (time-based) or v4 UUID string. */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
