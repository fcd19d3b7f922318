/**
 * Provides a client to the hooks below it: pass `client`, or `url` (and `options`) to have the
 * provider create one and disconnect it on unmount.
 * @param {{ client?: Herald, url?: string, options?: HeraldOptions, children?: import('react').ReactNode }} props
 * @returns {import('react').ReactElement}
 */
export function HeraldProvider({ client, url, options, children }: {
    client?: Herald;
    url?: string;
    options?: HeraldOptions;
    children?: import("react").ReactNode;
}): import("react").ReactElement;
/**
 * The client from the nearest `HeraldProvider` (or `client` when given).
 * @param {Herald} [client]
 * @returns {Herald}
 */
export function useHerald(client?: Herald): Herald;
/**
 * The connection state; re-renders on every change.
 * @param {Herald} [client]
 * @returns {ConnectionState}
 */
export function useConnectionState(client?: Herald): ConnectionState;
/**
 * Subscribes to channel `name` while the component is mounted.
 * @param {string} name
 * @param {HookOptions} [options]
 * @returns {{ channel: Channel|null, status: ChannelStatus }} `channel` is null until mounted.
 */
export function useChannel(name: string, options?: HookOptions): {
    channel: Channel | null;
    status: ChannelStatus;
};
/**
 * Receives broadcasts of `event` (`'*'` for all) on channel `name` and returns a function that
 * sends `event` on it. The handler may change between renders without resubscribing.
 * @param {string} name
 * @param {string} event
 * @param {((message: BroadcastMessage) => void)|null} [handler]
 * @param {HookOptions} [options]
 * @returns {(payload: any, sendOptions?: SendOptions) => Promise<SendResult>}
 */
export function useBroadcast(name: string, event: string, handler?: ((message: BroadcastMessage) => void) | null, options?: HookOptions): (payload: any, sendOptions?: SendOptions) => Promise<SendResult>;
/**
 * Presence on channel `name`: who is here (key → metas), re-rendered on every sync. With
 * `state`, tracks it while mounted (and again whenever it changes, compared as JSON).
 * @param {string} name
 * @param {HookOptions & { state?: Record<string, any> }} [options]
 * @returns {{ presences: PresenceMap, track: (state: Record<string, any>) => Promise<void>, untrack: () => Promise<void>, status: ChannelStatus }}
 */
export function usePresence(name: string, options?: HookOptions & {
    state?: Record<string, any>;
}): {
    presences: PresenceMap;
    track: (state: Record<string, any>) => Promise<void>;
    untrack: () => Promise<void>;
    status: ChannelStatus;
};
/**
 * Receives Postgres changes matching `filter` on channel `name` (bindings are sent in the join;
 * the server's reply gives them ids, and each change names the ids it matches).
 * @param {string} name
 * @param {PostgresChangesFilter} filter
 * @param {(change: any) => void} handler
 * @param {HookOptions} [options]
 * @returns {{ channel: Channel|null, status: ChannelStatus }}
 */
export function usePostgresChanges(name: string, filter: PostgresChangesFilter, handler: (change: any) => void, options?: HookOptions): {
    channel: Channel | null;
    status: ChannelStatus;
};
export { Herald };
export type Channel = import("./herald.js").Channel;
export type ChannelOptions = import("./herald.js").ChannelOptions;
export type ChannelStatus = import("./herald.js").ChannelStatus;
export type ConnectionState = import("./herald.js").ConnectionState;
export type BroadcastMessage = import("./herald.js").BroadcastMessage;
export type RecoveryEvent = import("./herald.js").RecoveryEvent;
export type PresenceMap = import("./herald.js").PresenceMap;
export type PostgresChangesFilter = import("./herald.js").PostgresChangesFilter;
export type SendOptions = import("./herald.js").SendOptions;
export type SendResult = import("./herald.js").SendResult;
export type HeraldOptions = import("./herald.js").HeraldOptions;
/**
 * `client` (instead of the provider's) and `onRecovery` (called with `recovered: false` when
 * messages may have been missed across a reconnect: reload the state).
 */
export type HookOptions = ChannelOptions & {
    client?: Herald;
    onRecovery?: (event: RecoveryEvent) => void;
};
import { Herald } from './herald.js';
