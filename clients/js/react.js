// @ts-check
/**
 * @module @herald/client/react
 *
 * React hooks for the Herald client. Every hook takes its channel handle in an effect and releases
 * it in the effect's cleanup, so nothing leaks when React mounts, unmounts and mounts again
 * (StrictMode); handles of one channel name share one server-side join.
 */
import {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
} from 'react';
import { Herald } from './herald.js';

/** @typedef {import('./herald.js').Channel} Channel */
/** @typedef {import('./herald.js').ChannelOptions} ChannelOptions */
/** @typedef {import('./herald.js').ChannelStatus} ChannelStatus */
/** @typedef {import('./herald.js').ConnectionState} ConnectionState */
/** @typedef {import('./herald.js').BroadcastMessage} BroadcastMessage */
/** @typedef {import('./herald.js').RecoveryEvent} RecoveryEvent */
/** @typedef {import('./herald.js').PresenceMap} PresenceMap */
/** @typedef {import('./herald.js').PostgresChangesFilter} PostgresChangesFilter */
/** @typedef {import('./herald.js').SendOptions} SendOptions */
/** @typedef {import('./herald.js').SendResult} SendResult */
/** @typedef {import('./herald.js').HeraldOptions} HeraldOptions */

/**
 * Options every channel hook accepts: the channel's join options, plus
 * @typedef {ChannelOptions & {
 *   client?: Herald,
 *   onRecovery?: (event: RecoveryEvent) => void,
 * }} HookOptions
 * `client` (instead of the provider's) and `onRecovery` (called with `recovered: false` when
 * messages may have been missed across a reconnect: reload the state).
 */

const HeraldContext = createContext(/** @type {Herald|null} */ (null));

/**
 * Provides a client to the hooks below it: pass `client`, or `url` (and `options`) to have the
 * provider create one and disconnect it on unmount.
 * @param {{ client?: Herald, url?: string, options?: HeraldOptions, children?: import('react').ReactNode }} props
 * @returns {import('react').ReactElement}
 */
export function HeraldProvider({ client, url, options, children }) {
  const [owned] = useState(() => (client ? null : url ? new Herald(url, options) : null));
  const value = client ?? owned;
  if (!value) throw new Error('HeraldProvider needs a `client` or a `url`');
  const pendingDisconnect = useRef(/** @type {ReturnType<typeof setTimeout>|null} */ (null));
  useEffect(() => {
    if (!owned) return undefined;
    if (pendingDisconnect.current !== null) {
      clearTimeout(pendingDisconnect.current);
      pendingDisconnect.current = null;
    }
    // Disconnect on the next tick, so StrictMode's unmount-then-mount keeps the connection.
    return () => {
      pendingDisconnect.current = setTimeout(() => {
        pendingDisconnect.current = null;
        owned.disconnect();
      }, 0);
    };
  }, [owned]);
  return createElement(HeraldContext.Provider, { value }, children);
}

/**
 * The client from the nearest `HeraldProvider` (or `client` when given).
 * @param {Herald} [client]
 * @returns {Herald}
 */
export function useHerald(client) {
  const fromContext = useContext(HeraldContext);
  const c = client ?? fromContext;
  if (!c) throw new Error('useHerald: no client (wrap the tree in <HeraldProvider> or pass one)');
  return c;
}

/**
 * The connection state; re-renders on every change.
 * @param {Herald} [client]
 * @returns {ConnectionState}
 */
export function useConnectionState(client) {
  const c = useHerald(client);
  const subscribe = useCallback((/** @type {() => void} */ onChange) => c.on('state', onChange), [c]);
  const get = useCallback(() => c.state, [c]);
  return useSyncExternalStore(subscribe, get, get);
}

/**
 * @param {HookOptions|undefined} options
 * @returns {string}
 */
function configKey(options) {
  const o = options ?? {};
  return JSON.stringify({ broadcast: o.broadcast ?? null, presence: o.presence ?? null, private: o.private ?? false });
}

/**
 * @param {string} key
 * @returns {ChannelOptions}
 */
function configFromKey(key) {
  const parsed = JSON.parse(key);
  /** @type {ChannelOptions} */
  const out = { private: parsed.private };
  if (parsed.broadcast) out.broadcast = parsed.broadcast;
  if (parsed.presence) out.presence = parsed.presence;
  return out;
}

/**
 * Takes a channel handle for the life of the component. `setup` registers listeners before the
 * handle subscribes (so replayed messages reach them). Re-created when the client, the name,
 * the join options (but `history`) or `setupKey` change.
 * @param {Herald} client
 * @param {string} name
 * @param {HookOptions|undefined} options
 * @param {((channel: Channel) => void)|null} setup
 * @param {string} setupKey
 * @returns {Channel|null}
 */
function useChannelHandle(client, name, options, setup, setupKey) {
  const [channel, setChannel] = useState(/** @type {Channel|null} */ (null));
  const key = configKey(options);
  const setupRef = useRef(setup);
  setupRef.current = setup;
  const recoveryRef = useRef(options?.onRecovery);
  recoveryRef.current = options?.onRecovery;
  // `history` only shapes the first join (and `since` is often computed in render), so it is read
  // when the handle is taken rather than being part of the key.
  const historyRef = useRef(options?.history);
  historyRef.current = options?.history;
  useEffect(() => {
    const config = configFromKey(key);
    if (historyRef.current) config.history = historyRef.current;
    const ch = client.channel(name, config);
    ch.on('recovery', (event) => recoveryRef.current?.(event));
    setupRef.current?.(ch);
    ch.subscribe();
    setChannel(ch);
    return () => {
      ch.unsubscribe();
      setChannel((current) => (current === ch ? null : current));
    };
  }, [client, name, key, setupKey]);
  return channel;
}

/**
 * @param {Channel|null} channel
 * @returns {ChannelStatus}
 */
function useStatus(channel) {
  const subscribe = useCallback(
    (/** @type {() => void} */ onChange) => (channel ? channel.on('status', onChange) : () => {}),
    [channel],
  );
  const get = useCallback(() => (channel ? channel.status : 'closed'), [channel]);
  return useSyncExternalStore(subscribe, get, get);
}

/**
 * Subscribes to channel `name` while the component is mounted.
 * @param {string} name
 * @param {HookOptions} [options]
 * @returns {{ channel: Channel|null, status: ChannelStatus }} `channel` is null until mounted.
 */
export function useChannel(name, options) {
  const client = useHerald(options?.client);
  const channel = useChannelHandle(client, name, options, null, '');
  const status = useStatus(channel);
  return { channel, status };
}

/**
 * Receives broadcasts of `event` (`'*'` for all) on channel `name` and returns a function that
 * sends `event` on it. The handler may change between renders without resubscribing.
 * @param {string} name
 * @param {string} event
 * @param {((message: BroadcastMessage) => void)|null} [handler]
 * @param {HookOptions} [options]
 * @returns {(payload: any, sendOptions?: SendOptions) => Promise<SendResult>}
 */
export function useBroadcast(name, event, handler, options) {
  const client = useHerald(options?.client);
  const handlerRef = useRef(handler);
  handlerRef.current = handler;
  const channel = useChannelHandle(
    client,
    name,
    options,
    (ch) => {
      ch.on('broadcast', event, (message) => handlerRef.current?.(message));
    },
    `broadcast:${event}`,
  );
  const channelRef = useRef(channel);
  channelRef.current = channel;
  return useCallback(
    (/** @type {any} */ payload, /** @type {SendOptions|undefined} */ sendOptions) => {
      const ch = channelRef.current;
      if (!ch) return Promise.reject(new Error(`useBroadcast: channel "${name}" is not mounted`));
      return ch.send(event === '*' ? 'message' : event, payload, sendOptions);
    },
    [name, event],
  );
}

/**
 * Presence on channel `name`: who is here (key → metas), re-rendered on every sync. With
 * `state`, tracks it while mounted (and again whenever it changes, compared as JSON).
 * @param {string} name
 * @param {HookOptions & { state?: Record<string, any> }} [options]
 * @returns {{ presences: PresenceMap, track: (state: Record<string, any>) => Promise<void>, untrack: () => Promise<void>, status: ChannelStatus }}
 */
export function usePresence(name, options) {
  const client = useHerald(options?.client);
  const presenceOptions = { ...(options ?? {}), presence: { ...(options?.presence ?? {}), enabled: true } };
  const channel = useChannelHandle(client, name, presenceOptions, null, '');
  const subscribe = useCallback(
    (/** @type {() => void} */ onChange) => (channel ? channel.on('presence', 'sync', onChange) : () => {}),
    [channel],
  );
  const get = useCallback(() => (channel ? channel.presenceState() : EMPTY_PRESENCE), [channel]);
  const presences = useSyncExternalStore(subscribe, get, get);
  const status = useStatus(channel);
  const stateKey = options?.state ? JSON.stringify(options.state) : null;
  useEffect(() => {
    if (!channel || stateKey === null) return undefined;
    channel.track(JSON.parse(stateKey)).catch(() => {});
    return () => {
      channel.untrack().catch(() => {});
    };
  }, [channel, stateKey]);
  const track = useCallback(
    (/** @type {Record<string, any>} */ state) =>
      channel ? channel.track(state) : Promise.reject(new Error(`usePresence: channel "${name}" is not mounted`)),
    [channel, name],
  );
  const untrack = useCallback(() => (channel ? channel.untrack() : Promise.resolve()), [channel]);
  return { presences, track, untrack, status };
}

/** @type {PresenceMap} */
const EMPTY_PRESENCE = Object.freeze({});

/**
 * Receives Postgres changes matching `filter` on channel `name` (bindings are sent in the join;
 * the server's reply gives them ids, and each change names the ids it matches).
 * @param {string} name
 * @param {PostgresChangesFilter} filter
 * @param {(change: any) => void} handler
 * @param {HookOptions} [options]
 * @returns {{ channel: Channel|null, status: ChannelStatus }}
 */
export function usePostgresChanges(name, filter, handler, options) {
  const client = useHerald(options?.client);
  const handlerRef = useRef(handler);
  handlerRef.current = handler;
  const filterKey = JSON.stringify(filter ?? {});
  const channel = useChannelHandle(
    client,
    name,
    options,
    (ch) => {
      ch.on('postgres_changes', JSON.parse(filterKey), (change) => handlerRef.current?.(change));
    },
    `postgres:${filterKey}`,
  );
  const status = useStatus(channel);
  return { channel, status };
}

export { Herald };
