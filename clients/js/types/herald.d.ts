/**
 * Full-jitter exponential backoff: a delay drawn uniformly from
 * `[0, min(capMs, baseMs * 2^(attempt - 1)))`, rounded down.
 * @param {number} attempt 1 for the first retry.
 * @param {{ baseMs?: number, capMs?: number }} [options]
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt: number, options?: {
    baseMs?: number;
    capMs?: number;
}, random?: () => number): number;
/**
 * Decodes base64 or base64url text to bytes.
 * @param {string} text
 * @returns {Uint8Array}
 */
export function base64ToBytes(text: string): Uint8Array;
/**
 * The claims of a JWT (not verified), or null when it cannot be decoded.
 * @param {string|null|undefined} token
 * @returns {Record<string, any>|null}
 */
export function decodeJwt(token: string | null | undefined): Record<string, any> | null;
/**
 * When a JWT expires, in milliseconds since the epoch, from its `exp` claim; null if unknown.
 * @param {string|null|undefined} token
 * @returns {number|null}
 */
export function tokenExpiresAt(token: string | null | undefined): number | null;
/**
 * Decodes a binary kind-4 broadcast frame (protocol 2.0.0):
 * `[4, topic_len, event_len, meta_len, encoding, topic, event, meta JSON, payload]`.
 * `encoding` 1 means a JSON payload (parsed), 0 raw bytes (a `Uint8Array`).
 * @param {ArrayBuffer|ArrayBufferView} data
 * @returns {{ topic: string, event: string, meta: Record<string, any>, payload: any, binary: boolean }|null}
 *   null for anything that is not a well-formed kind-4 frame.
 */
export function decodeBroadcastFrame(data: ArrayBuffer | ArrayBufferView): {
    topic: string;
    event: string;
    meta: Record<string, any>;
    payload: any;
    binary: boolean;
} | null;
/**
 * Encodes a binary kind-3 push (a raw-bytes broadcast from the client):
 * `[3, join_ref_len, ref_len, topic_len, event_len, meta_len, 0, join_ref, ref, topic, event, meta, payload]`.
 * @param {{ joinRef: string, ref: string, topic: string, event: string, meta?: Record<string, unknown>, payload: Uint8Array }} push
 * @returns {Uint8Array}
 */
export function encodePushFrame({ joinRef, ref, topic, event, meta, payload }: {
    joinRef: string;
    ref: string;
    topic: string;
    event: string;
    meta?: Record<string, unknown>;
    payload: Uint8Array;
}): Uint8Array;
/**
 * A fresh random id (UUID v4 where `crypto.randomUUID` exists).
 * @returns {string}
 */
export function randomId(): string;
/**
 * Shorthand for `new Herald(url, options)`.
 * @param {string} url
 * @param {HeraldOptions} [options]
 * @returns {Herald}
 */
export function createClient(url: string, options?: HeraldOptions): Herald;
/**
 * @module @herald/client
 *
 * JavaScript client for Herald. One self-contained ES module (no build step, no dependencies):
 *
 * - WebSocket transport speaking the Phoenix channel protocol, serializer vsn 2.0.0 (JSON text
 *   arrays and binary kind-4 broadcasts);
 * - Server-Sent Events transport (`GET /sse`) with `POST /api/broadcast` for sends, used when the
 *   WebSocket cannot be opened;
 * - a connection state machine (`connecting`, `live`, `reconnecting`, `offline`, `closed`, `failed`),
 *   exponential backoff with full jitter, heartbeats, token refresh;
 * - channels: broadcast (with acks and idempotency keys), presence, postgres_changes bindings;
 * - recent history on a channel's first join (`history`), recovery after every reconnect from the
 *   last seen position, de-duplication by position and by message id (the client's own messages
 *   recognised by the positions their acks report), and a `recovery` event (`recovered: false`) when
 *   the server cannot fill the gap.
 */
/** The Phoenix serializer version this client speaks. */
export const PROTOCOL_VERSION: "2.0.0";
/** The client's version. */
export const VERSION: "0.1.0";
/** A set that forgets its oldest entries beyond a limit. */
export class BoundedSet {
    /** @param {number} [limit] */
    constructor(limit?: number);
    limit: number;
    /** @type {Set<string>} */
    items: Set<string>;
    /** @param {string} value */
    has(value: string): boolean;
    /** @param {string} value */
    add(value: string): void;
    clear(): void;
}
/**
 * De-duplicates a channel's messages by position `(epoch, offset)` and by message id (`meta.id`),
 * and tracks the channel's position (the highest offset seen in the current epoch), which is what a
 * rejoin asks to recover from.
 */
export class Deduper {
    /** @param {number} [limit] How many positions and ids are remembered. */
    constructor(limit?: number);
    /** @type {{ epoch: string, offset: number }|null} */
    position: {
        epoch: string;
        offset: number;
    } | null;
    positions: BoundedSet;
    ids: BoundedSet;
    duplicates: number;
    /**
     * True when the message with this `meta` is new (and records it), false for a duplicate.
     * @param {unknown} meta
     * @returns {boolean}
     */
    accept(meta: unknown): boolean;
    /**
     * Moves the position (a join reply's start position).
     * @param {{ epoch: string, offset: number }|null} position
     */
    reset(position: {
        epoch: string;
        offset: number;
    } | null): void;
}
/**
 * Presence state of one channel: `presence_state` replaces it, `presence_diff` applies joins then
 * leaves, metas are told apart by `phx_ref` (the Phoenix Presence algorithm). Each change yields a
 * new state object, so it can serve as an immutable snapshot.
 */
export class PresenceState {
    /** @type {PresenceMap} */
    state: PresenceMap;
    /**
     * Replaces the state with a full `presence_state`; returns the joins and leaves it implies.
     * @param {unknown} raw
     * @returns {{ joins: PresenceJoinEvent[], leaves: PresenceLeaveEvent[] }}
     */
    syncState(raw: unknown): {
        joins: PresenceJoinEvent[];
        leaves: PresenceLeaveEvent[];
    };
    /**
     * Applies a `presence_diff` payload `{ joins, leaves }`.
     * @param {unknown} raw
     * @returns {{ joins: PresenceJoinEvent[], leaves: PresenceLeaveEvent[] }}
     */
    syncDiff(raw: unknown): {
        joins: PresenceJoinEvent[];
        leaves: PresenceLeaveEvent[];
    };
    /**
     * @param {PresenceMap} joins
     * @param {PresenceMap} leaves
     * @returns {{ joins: PresenceJoinEvent[], leaves: PresenceLeaveEvent[] }}
     */
    applyDiff(joins: PresenceMap, leaves: PresenceMap): {
        joins: PresenceJoinEvent[];
        leaves: PresenceLeaveEvent[];
    };
}
/**
 * A handle on a channel. Handles of one name share one server-side join; each handle has its own
 * listeners, and the join is left when the last handle unsubscribes.
 */
export class Channel {
    /**
     * @param {Herald} client
     * @param {Topic} topic
     */
    constructor(client: Herald, topic: Topic);
    /** @internal */
    _client: Herald;
    /** @internal */
    _topic: Topic;
    /** @internal @type {Listener[]} */
    _listeners: Listener[];
    /** @internal @type {Emitter<{ status: ChannelStatusEvent, recovery: RecoveryEvent, system: any }>} */
    _emitter: Emitter<{
        status: ChannelStatusEvent;
        recovery: RecoveryEvent;
        system: any;
    }>;
    /** @internal */
    _subscribed: boolean;
    /** @internal */
    _closed: boolean;
    /** @internal @type {Array<{ resolve: () => void, reject: (e: Error) => void }>} */
    _waiters: Array<{
        resolve: () => void;
        reject: (e: Error) => void;
    }>;
    /** The channel's name (without `realtime:`). */
    get name(): string;
    /** @returns {ChannelStatus} */
    get status(): ChannelStatus;
    /** The last position seen (`{ epoch, offset }`), or null. */
    get position(): {
        epoch: string;
        offset: number;
    } | null;
    /** Messages delivered and duplicates dropped on this channel. */
    get stats(): {
        delivered: number;
        duplicates: number;
    };
    /**
     * @overload
     * @param {'broadcast'} type
     * @param {string | { event?: string }} filter An event name, or `'*'` for all.
     * @param {(message: BroadcastMessage) => void} callback
     * @returns {() => void}
     */
    on(type: "broadcast", filter: string | {
        event?: string;
    }, callback: (message: BroadcastMessage) => void): () => void;
    /**
     * @overload
     * @param {'presence'} type
     * @param {'sync'} filter
     * @param {() => void} callback
     * @returns {() => void}
     */
    on(type: "presence", filter: "sync", callback: () => void): () => void;
    /**
     * @overload
     * @param {'presence'} type
     * @param {'join'} filter
     * @param {(event: PresenceJoinEvent) => void} callback
     * @returns {() => void}
     */
    on(type: "presence", filter: "join", callback: (event: PresenceJoinEvent) => void): () => void;
    /**
     * @overload
     * @param {'presence'} type
     * @param {'leave'} filter
     * @param {(event: PresenceLeaveEvent) => void} callback
     * @returns {() => void}
     */
    on(type: "presence", filter: "leave", callback: (event: PresenceLeaveEvent) => void): () => void;
    /**
     * @overload
     * @param {'postgres_changes'} type
     * @param {PostgresChangesFilter} filter
     * @param {(change: any) => void} callback
     * @returns {() => void}
     */
    on(type: "postgres_changes", filter: PostgresChangesFilter, callback: (change: any) => void): () => void;
    /**
     * @overload
     * @param {'status'} type
     * @param {(event: ChannelStatusEvent) => void} callback
     * @returns {() => void}
     */
    on(type: "status", callback: (event: ChannelStatusEvent) => void): () => void;
    /**
     * @overload
     * @param {'recovery'} type
     * @param {(event: RecoveryEvent) => void} callback
     * @returns {() => void}
     */
    on(type: "recovery", callback: (event: RecoveryEvent) => void): () => void;
    /**
     * @overload
     * @param {'system'} type
     * @param {(payload: any) => void} callback
     * @returns {() => void}
     */
    on(type: "system", callback: (payload: any) => void): () => void;
    /**
     * Joins (shared with other handles of this name); the client connects if it is not connected.
     * @returns {this}
     */
    subscribe(): this;
    /**
     * Resolves once the channel is joined (at once if it is); rejects if this handle is
     * unsubscribed first.
     * @returns {Promise<void>}
     */
    ready(): Promise<void>;
    /**
     * Removes this handle's listeners; the join is left when no handle of this name remains.
     * @returns {void}
     */
    unsubscribe(): void;
    /**
     * Broadcasts `payload` (any JSON value, or bytes) as `event`. Resolves once Herald accepted it
     * (`ack`), with where it was stored (`{ status: 'ok', offset, epoch }` when the channel keeps
     * history and the WebSocket carried it), retrying across reconnects with the same idempotency
     * key; rejects when refused or after `timeoutMs`.
     * @param {string} event
     * @param {any} payload
     * @param {SendOptions} [options]
     * @returns {Promise<SendResult>}
     */
    send(event: string, payload: any, options?: SendOptions): Promise<SendResult>;
    /**
     * Publishes this client's presence state on the channel (replacing the previous one); kept and
     * tracked again after every rejoin. WebSocket transport only.
     * @param {Record<string, any>} state
     * @returns {Promise<void>}
     */
    track(state: Record<string, any>): Promise<void>;
    /**
     * Removes this client's presence from the channel.
     * @returns {Promise<void>}
     */
    untrack(): Promise<void>;
    /**
     * Who is here: presence key → metas (each with its `phx_ref`). A new object after every change.
     * @returns {PresenceMap}
     */
    presenceState(): PresenceMap;
    /** @internal @param {BroadcastMessage} message */
    _dispatchBroadcast(message: BroadcastMessage): void;
    /**
     * @internal
     * @param {'sync'|'join'|'leave'} kind
     * @param {any} value
     */
    _dispatchPresence(kind: "sync" | "join" | "leave", value: any): void;
    /** @internal */
    _resolveReady(): void;
}
/**
 * The Herald client: one connection (WebSocket, or SSE plus HTTP), any number of channels.
 *
 * ```js
 * const herald = new Herald('https://rt.example.com', { token })
 * const room = herald.channel('room1')
 * room.on('broadcast', 'chat', (m) => console.log(m.payload))
 * room.subscribe()
 * await room.send('chat', { text: 'hi' })
 * ```
 */
export class Herald {
    /**
     * @param {string} url Herald's base URL (`http(s)://` or `ws(s)://`; relative URLs resolve
     *   against the page).
     * @param {HeraldOptions} [options]
     */
    constructor(url: string, options?: HeraldOptions);
    /** Base URL of the HTTP API and SSE. */
    httpUrl: string;
    /** @internal */
    _o: {
        token: string | null;
        getToken: TokenCallback | null;
        transports: ("websocket" | "sse")[];
        WebSocket: any;
        EventSource: any;
        fetch: typeof fetch | null;
        backoff: {
            /**
             * Default 500.
             */
            baseMs: number;
            /**
             * Default 30000.
             */
            capMs: number;
            /**
             * Consecutive failed attempts before `failed`; default Infinity.
             */
            maxAttempts: number;
        };
        random: () => number;
        heartbeatIntervalMs: number;
        heartbeatTimeoutMs: number;
        connectTimeoutMs: number;
        joinTimeoutMs: number;
        sendTimeoutMs: number;
        refreshLeadMs: number;
        fallbackAfter: number;
        authFailureAfter: number;
        immediateFailureMs: number;
        storage: StorageLike | null;
        storageKey: string;
        window: EventTargetLike | null;
        document: EventTargetLike | null;
        logger: Logger;
        autoConnect: boolean;
    };
    /** WebSocket endpoint (without query). */
    socketUrl: string;
    /** SSE endpoint (without query). */
    sseUrl: string;
    /** @internal */
    _apiUrl: string;
    /** @internal @type {Clock} */
    _clock: Clock;
    /** @internal @type {string|null} */
    _token: string | null;
    /** @internal @type {Promise<string>|null} */
    _tokenPromise: Promise<string> | null;
    /** @internal */
    _tokenFailures: number;
    /** @internal @type {unknown} */
    _refreshTimer: unknown;
    /** @internal */
    _refreshAttempt: number;
    /** @internal @type {Map<string, Topic>} */
    _topics: Map<string, Topic>;
    /** @internal @type {WsTransport|SseTransport|null} */
    _conn: WsTransport | SseTransport | null;
    /** @internal */
    _ref: number;
    /** @internal */
    _wantConnection: boolean;
    /** @internal */
    _attempt: number;
    /** @internal */
    _transportIndex: number;
    /** @internal */
    _openFailures: number;
    /** @internal */
    _suspectAuth: number;
    /** @internal @type {unknown} */
    _reconnectTimer: unknown;
    /** @internal */
    _generation: number;
    /** @internal @type {Emitter<{ state: ConnectionState }>} */
    _emitter: Emitter<{
        state: ConnectionState;
    }>;
    /** @internal @type {Array<() => void>} */
    _envCleanup: Array<() => void>;
    /** @internal @type {Map<string, { cursor: string, topics: string[] }>} SSE cursors when there is no storage */
    _memoryCursors: Map<string, {
        cursor: string;
        topics: string[];
    }>;
    /** @internal @type {ConnectionState} */
    _state: ConnectionState;
    /**
     * The current connection state (a frozen object; a new one on every change).
     * @returns {ConnectionState}
     */
    get state(): ConnectionState;
    /** The token currently in use, if any. */
    get token(): string | null;
    /**
     * Listens to connection state changes; returns the function that removes the listener.
     * @param {'state'} type
     * @param {(state: ConnectionState) => void} callback
     * @returns {() => void}
     */
    on(type: "state", callback: (state: ConnectionState) => void): () => void;
    /**
     * A handle on channel `name`. Handles of one name share one join; the first handle's options
     * decide `private`, `broadcast.self`, `broadcast.ack`, `history` and `presence.key`.
     * @param {string} name
     * @param {ChannelOptions} [options]
     * @returns {Channel}
     */
    channel(name: string, options?: ChannelOptions): Channel;
    /**
     * The channels in use (for diagnostics).
     * @returns {ChannelInfo[]}
     */
    channels(): ChannelInfo[];
    /**
     * Starts connecting (a no-op while connecting or live).
     * @returns {void}
     */
    connect(): void;
    /**
     * Closes the connection and stops reconnecting; channels stay registered and rejoin on `connect()`.
     * @returns {void}
     */
    disconnect(): void;
    /**
     * Replaces the token: pushed at once to every joined WebSocket channel (`access_token`), used by
     * the next connection and HTTP send. After `failed`, also reconnects.
     * @param {string} token
     * @returns {void}
     */
    setToken(token: string): void;
    /** @internal */
    _makeRef(): string;
    /**
     * @internal
     * @param {'debug'|'info'|'warn'|'error'} level
     * @param {string} message
     * @param {unknown} [detail]
     */
    _log(level: "debug" | "info" | "warn" | "error", message: string, detail?: unknown): void;
    /**
     * @internal
     * @param {'_reconnectTimer'|'_refreshTimer'} name
     */
    _clearTimer(name: "_reconnectTimer" | "_refreshTimer"): void;
    /**
     * @internal
     * @param {Omit<ConnectionState, 'since'>} next
     */
    _setState(next: Omit<ConnectionState, "since">): void;
    /** @internal @param {Channel} handle */
    _attach(handle: Channel): void;
    /** @internal @param {Channel} handle */
    _detach(handle: Channel): void;
    /** @internal */
    _installEnvListeners(): void;
    /** @internal */
    _removeEnvListeners(): void;
    /** @internal */
    _isOffline(): boolean;
    /** @internal */
    _onOnline(): void;
    /** @internal */
    _onOffline(): void;
    /**
     * While waiting to reconnect, try now.
     * @internal
     * @param {string} why
     */
    _retryNow(why: string): void;
    /** @internal */
    _currentTransport(): "websocket" | "sse";
    /** @internal */
    _startAttempt(): Promise<void>;
    /**
     * @internal
     * @param {WsTransport|SseTransport} conn
     */
    _onTransportOpen(conn: WsTransport | SseTransport): void;
    /**
     * A transport failed before it opened.
     * @internal
     * @param {WsTransport|SseTransport} conn
     * @param {{ reason: string, status?: number, immediate: boolean }} info
     */
    _onTransportFail(conn: WsTransport | SseTransport, info: {
        reason: string;
        status?: number;
        immediate: boolean;
    }): Promise<void>;
    /**
     * A live transport went away.
     * @internal
     * @param {WsTransport|SseTransport} conn
     * @param {string} reason
     */
    _onTransportDown(conn: WsTransport | SseTransport, reason: string): void;
    /**
     * @internal
     * @param {string} reason
     */
    _scheduleReconnect(reason: string): void;
    /**
     * @internal
     * @param {string} reason
     */
    _fail(reason: string): void;
    /**
     * `POST /api/broadcast` with an empty batch: 202 when the token is accepted, 401 when not.
     * @internal
     * @returns {Promise<number|null>} the status, or null when the server could not be reached
     */
    _probeAuth(): Promise<number | null>;
    /**
     * @internal
     * @param {string} path under the API prefix
     * @param {string|Uint8Array} body
     * @param {string} contentType
     * @param {Record<string, string>} [headers]
     * @returns {Promise<Response>}
     */
    _post(path: string, body: string | Uint8Array, contentType: string, headers?: Record<string, string>): Promise<Response>;
    /**
     * A token from `getToken` (one call at a time), else the configured one.
     * @internal
     * @param {'connect'|'refresh'|'rejoin'} reason
     * @returns {Promise<string|null>}
     */
    _fetchToken(reason: "connect" | "refresh" | "rejoin"): Promise<string | null>;
    /**
     * @internal
     * @param {string} token
     */
    _applyToken(token: string): void;
    /** @internal */
    _scheduleRefresh(): void;
    /**
     * @internal
     * @param {string|null} joinRef
     * @param {unknown} topic
     * @param {unknown} event
     * @param {unknown} payload
     */
    _onFrame(joinRef: string | null, topic: unknown, event: unknown, payload: unknown): void;
    /**
     * The SSE streams wanted: channels grouped by privacy.
     * @internal
     * @returns {Map<string, { private: boolean, topics: string[], presence: boolean }>}
     */
    _sseGroups(): Map<string, {
        private: boolean;
        topics: string[];
        presence: boolean;
    }>;
    /**
     * @internal
     * @param {string} key
     * @returns {{ cursor: string, topics: string[] }|null}
     */
    _loadCursor(key: string): {
        cursor: string;
        topics: string[];
    } | null;
    /**
     * @internal
     * @param {string} key
     * @param {string} cursor
     * @param {string[]} topics
     */
    _saveCursor(key: string, cursor: string, topics: string[]): void;
}
export default Herald;
export type ConnectionStateName = "connecting" | "live" | "reconnecting" | "offline" | "closed" | "failed";
export type TransportName = "websocket" | "sse";
/**
 * The connection state, as a value (`client.state`) and as the payload of the `state` event.
 */
export type ConnectionState = {
    state: ConnectionStateName;
    /**
     * The transport in use or being tried.
     */
    transport: TransportName | null;
    /**
     * Consecutive failed attempts so far (0 while live).
     */
    attempt: number;
    /**
     * While `reconnecting`: milliseconds until the next attempt.
     */
    delay: number | null;
    /**
     * Why the connection is not live (`failed`, `reconnecting`, `closed`).
     */
    reason: string | null;
    /**
     * Clock time (ms) at which this state was entered.
     */
    since: number;
};
/**
 * An injectable clock; every timer of the client goes through it.
 */
export type Clock = {
    /**
     * Milliseconds since the Unix epoch.
     */
    now: () => number;
    setTimeout: (fn: () => void, ms: number) => unknown;
    clearTimeout: (handle: unknown) => void;
};
/**
 * Backoff settings: full jitter, delay drawn from [0, min(capMs, baseMs * 2^(attempt-1))).
 */
export type BackoffOptions = {
    /**
     * Default 500.
     */
    baseMs?: number | undefined;
    /**
     * Default 30000.
     */
    capMs?: number | undefined;
    /**
     * Consecutive failed attempts before `failed`; default Infinity.
     */
    maxAttempts?: number | undefined;
};
/**
 * A `sessionStorage`-like store (only these three methods are used).
 */
export type StorageLike = {
    getItem: (key: string) => string | null;
    setItem: (key: string, value: string) => void;
    removeItem: (key: string) => void;
};
/**
 * Something with `addEventListener` / `removeEventListener` (a `window`, a `document`, an
 * `EventTarget`).
 */
export type EventTargetLike = {
    addEventListener: (type: string, listener: (ev: any) => void) => void;
    removeEventListener: (type: string, listener: (ev: any) => void) => void;
    navigator?: {
        onLine?: boolean;
    } | undefined;
    visibilityState?: string | undefined;
};
export type TokenCallback = (reason: "connect" | "refresh" | "rejoin") => string | Promise<string>;
export type Logger = (level: "debug" | "info" | "warn" | "error", message: string, detail?: unknown) => void;
export type HeraldOptions = {
    /**
     * The JWT to connect with (sent as `apikey`).
     */
    token?: string | undefined;
    /**
     * Called for a token on every connection attempt, before a
     * channel rejoins after the server closed it, and shortly before the current token expires
     * (`refreshLeadMs`).
     */
    getToken?: TokenCallback | undefined;
    /**
     * In order of preference; default `['websocket', 'sse']`.
     */
    transports?: TransportName[] | undefined;
    /**
     * A WebSocket constructor (default: the global one).
     */
    WebSocket?: any;
    /**
     * An EventSource constructor (default: the global one).
     */
    EventSource?: any;
    /**
     * A fetch implementation (default: the global one; `null`: none,
     * so no HTTP sends and no auth probe).
     */
    fetch?: typeof fetch | null | undefined;
    backoff?: BackoffOptions | undefined;
    /**
     * Random source in [0, 1) for jitter (default `Math.random`).
     */
    random?: (() => number) | undefined;
    /**
     * Timers and time (default: the real ones).
     */
    clock?: Clock | undefined;
    /**
     * Default 25000.
     */
    heartbeatIntervalMs?: number | undefined;
    /**
     * A heartbeat unanswered this long ends the socket; default 10000.
     */
    heartbeatTimeoutMs?: number | undefined;
    /**
     * Default 10000.
     */
    connectTimeoutMs?: number | undefined;
    /**
     * Default 10000.
     */
    joinTimeoutMs?: number | undefined;
    /**
     * How long `send` keeps trying before it rejects; default 10000.
     */
    sendTimeoutMs?: number | undefined;
    /**
     * Refresh the token this long before it expires (at most half its
     * remaining life); default 60000.
     */
    refreshLeadMs?: number | undefined;
    /**
     * Consecutive failed opens of a transport before the next one in
     * `transports` is tried; default 2.
     */
    fallbackAfter?: number | undefined;
    /**
     * Consecutive immediate failures that, together with a token
     * callback error or a token expired by its own `exp`, mean `failed` when no HTTP probe is
     * possible; also consecutive token callback errors that mean `failed`. Default 3.
     */
    authFailureAfter?: number | undefined;
    /**
     * A transport that fails within this long of being created
     * failed "immediately"; default 2000.
     */
    immediateFailureMs?: number | undefined;
    /**
     * Where the SSE cursor is kept (default: `sessionStorage` when
     * available; `null` turns persistence off).
     */
    storage?: StorageLike | null | undefined;
    /**
     * Prefix of the storage keys; default `herald:<http base URL>`.
     */
    storageKey?: string | undefined;
    /**
     * Source of `online` / `offline` events (default: `window`).
     */
    window?: EventTargetLike | null | undefined;
    /**
     * Source of `visibilitychange` (default: `document`).
     */
    document?: EventTargetLike | null | undefined;
    /**
     * Default: errors to `console.error`, nothing else.
     */
    logger?: Logger | undefined;
    /**
     * Default `/socket/websocket`.
     */
    socketPath?: string | undefined;
    /**
     * Default `/sse`.
     */
    ssePath?: string | undefined;
    /**
     * Default `/api`.
     */
    apiPath?: string | undefined;
    /**
     * Connect when the first channel subscribes; default true.
     */
    autoConnect?: boolean | undefined;
};
/**
 * Join options of a channel (the `config` of `phx_join`).
 */
export type ChannelOptions = {
    /**
     * `self`: receive your own broadcasts
     * (default false). `ack`: `send` resolves when Herald accepted the message (default true; false
     * resolves once written to the socket).
     */
    broadcast?: {
        self?: boolean;
        ack?: boolean;
    } | undefined;
    /**
     * Presence is enabled when `enabled`, when
     * a `key` is set, or when a presence listener is registered.
     */
    presence?: {
        key?: string;
        enabled?: boolean;
    } | undefined;
    /**
     * A private channel (default false).
     */
    private?: boolean | undefined;
    /**
     * Recent messages to receive on the first join (WebSocket):
     * `{ since, limit }`. Later rejoins recover from the last message seen instead.
     */
    history?: ChannelHistoryOptions | undefined;
};
/**
 * What the first join of a channel asks for (`config.broadcast.replay`): the newest `limit` messages
 * sent since `since`, oldest first, delivered with `meta.replayed: true`. Channels without history
 * replay nothing.
 */
export type ChannelHistoryOptions = {
    /**
     * Milliseconds since the Unix epoch (or a `Date`); default 0, everything
     * the channel still keeps.
     */
    since?: number | Date | undefined;
    /**
     * At most this many messages (1 to 1000); default: the server's (25).
     */
    limit?: number | undefined;
};
export type BroadcastMessage = {
    type: "broadcast";
    /**
     * The channel name (without `realtime:`).
     */
    topic: string;
    event: string;
    /**
     * JSON value, or a `Uint8Array` for raw-bytes broadcasts.
     */
    payload: any;
    meta: {
        id?: string;
        offset?: number;
        epoch?: string;
        replayed?: boolean;
        [k: string]: unknown;
    };
};
export type RecoveryEvent = {
    /**
     * Always false: messages may have been missed; reload the state.
     */
    recovered: false;
    topic: string;
    transport: TransportName;
    reason: string;
    /**
     * For Postgres Changes: the table (`schema.table`) whose missed changes
     * could not be replayed.
     */
    table?: string | undefined;
};
export type ChannelStatus = "closed" | "joining" | "joined" | "errored";
export type ChannelStatusEvent = {
    status: ChannelStatus;
    reason: string | null;
};
export type PostgresChangesFilter = {
    event?: string;
    schema?: string;
    table?: string;
    filter?: string;
};
export type PresenceMap = Record<string, Array<Record<string, any>>>;
export type PresenceJoinEvent = {
    key: string;
    /**
     * Metas under `key` before the join.
     */
    currentPresences: Array<Record<string, any>>;
    newPresences: Array<Record<string, any>>;
};
export type PresenceLeaveEvent = {
    key: string;
    /**
     * Metas still under `key` after the leave.
     */
    currentPresences: Array<Record<string, any>>;
    leftPresences: Array<Record<string, any>>;
};
/**
 * What `send` resolves with. `offset` and `epoch` say where Herald stored the message, when the channel
 * keeps history and the send was acknowledged over the WebSocket (`broadcast.ack`, the default); they
 * match `meta.offset` and `meta.epoch` of the message as others receive it.
 */
export type SendResult = {
    status: "ok";
    offset?: number | undefined;
    epoch?: string | undefined;
};
export type SendOptions = {
    /**
     * Default: a fresh random key (retries reuse it).
     */
    idempotencyKey?: string | undefined;
    /**
     * Default: the client's `sendTimeoutMs`.
     */
    timeoutMs?: number | undefined;
};
export type ChannelInfo = {
    name: string;
    status: ChannelStatus;
    /**
     * Live `Channel` handles sharing the join.
     */
    handles: number;
    position: {
        epoch: string;
        offset: number;
    } | null;
    stats: {
        delivered: number;
        duplicates: number;
    };
};
export type PendingReply = {
    onReply: (reply: {
        status: string;
        response: any;
    } | null, why: "reply" | "timeout" | "closed") => void;
    timer: unknown;
};
export type SseStream = {
    /**
     * 'public' or 'private'
     */
    key: string;
    private: boolean;
    topics: string[];
    presence: boolean;
    signature: string;
    es: any;
    opened: boolean;
    /**
     * A newer stream for the same group has opened.
     */
    superseded: boolean;
    /**
     * Topics whose `system` "recovered: false" is reported to the app.
     */
    resumable: Set<string>;
};
export type OutboxItem = {
    event: string;
    payload: any;
    /**
     * idempotency key
     */
    key: string;
    inFlight: boolean;
    /**
     * written, but the connection went away before the ack: it may be stored
     */
    uncertain: boolean;
    resolve: (value: SendResult) => void;
    reject: (err: Error) => void;
    timer: unknown;
    deadline: number;
};
export type Listener = {
    type: string;
    filter: any;
    callback: (value: any) => void;
    /**
     * postgres_changes: the id the server gave this binding
     */
    bindingId?: number | null | undefined;
};
/**
 * One server-side subscription of a topic, shared by every `Channel` handle of that name.
 * @internal
 */
declare class Topic {
    /**
     * @param {Herald} client
     * @param {string} name
     * @param {ChannelOptions} options
     */
    constructor(client: Herald, name: string, options: ChannelOptions);
    client: Herald;
    name: string;
    options: ChannelOptions;
    wireTopic: string;
    private: boolean;
    self: boolean;
    ack: boolean;
    presenceKey: string;
    presenceOption: boolean;
    history: {
        since: number;
        limit?: number;
    } | null;
    /** A join asking for `history` was accepted: later joins recover instead. */
    historyServed: boolean;
    /** @type {{ epoch: string, offset: number } | null} where the channel stood when its history replay was served */
    replayTop: {
        epoch: string;
        offset: number;
    } | null;
    /** @type {'recover'|'replay'|'start'} what the current join asked for */
    joinMode: "recover" | "replay" | "start";
    /** @type {Set<Channel>} */
    handles: Set<Channel>;
    /** @type {ChannelStatus} */
    status: ChannelStatus;
    /** @type {string|null} */
    statusReason: string | null;
    /** @type {string|null} */
    joinRef: string | null;
    everJoined: boolean;
    dedup: Deduper;
    delivered: number;
    presence: PresenceState;
    /** @type {Record<string, any>|null} */
    tracked: Record<string, any> | null;
    /** @type {OutboxItem[]} */
    outbox: OutboxItem[];
    /** ids of messages this client sent over HTTP (for `self: false` on SSE) */
    ownIds: BoundedSet;
    /** `epoch:offset` of messages this client sent, from the acks (for `self: false` in replays) */
    ownPositions: BoundedSet;
    /** @type {BroadcastMessage[]} accepted messages held back until this client's own can be told apart */
    held: BroadcastMessage[];
    /** @type {Listener[]} the postgres_changes bindings sent in the current join */
    joinedBindings: Listener[];
    /** @type {Record<string, { epoch: string, offset: number }>} last change seen per table log */
    pgPositions: Record<string, {
        epoch: string;
        offset: number;
    }>;
    joinedPresence: boolean;
    joinedPresenceKey: string;
    /** @type {string|null} why the SSE endpoint refused this channel (it is left out of streams) */
    sseRefused: string | null;
    rejoinAttempt: number;
    /** @type {unknown} */
    rejoinTimer: unknown;
    /** @type {unknown} */
    leaveTimer: unknown;
    /** @type {string|null} */
    lastSystemError: string | null;
    httpFlushing: boolean;
    /** @type {unknown} */
    httpRetryTimer: unknown;
    get wanted(): boolean;
    /** Presence is on for this join: configured, or a presence listener exists. */
    wantsPresence(): boolean;
    /** @returns {Listener[]} */
    bindings(): Listener[];
    /**
     * @param {ChannelStatus} status
     * @param {string|null} [reason]
     */
    setStatus(status: ChannelStatus, reason?: string | null): void;
    /** @param {Channel} handle */
    attach(handle: Channel): void;
    /** @param {Channel} handle */
    detach(handle: Channel): void;
    /** The handles' needs changed (presence, postgres bindings): rejoin when they differ from the join's. */
    configChanged(): void;
    start(): void;
    /** The transport is live: (re)join. */
    transportUp(): void;
    /** The transport went away: wait for the next one. */
    transportDown(): void;
    clearRejoin(): void;
    /**
     * Sends `phx_join` on the WebSocket: recover from the last position seen; without one, the
     * `history` replay until a join asking for it is accepted, else the empty position (which only
     * learns where the channel is).
     */
    join(): void;
    /**
     * @param {string} ref
     * @param {{ status: string, response: any }|null} reply
     * @param {'reply'|'timeout'|'closed'} why
     */
    onJoinReply(ref: string, reply: {
        status: string;
        response: any;
    } | null, why: "reply" | "timeout" | "closed"): void;
    scheduleRejoin(): void;
    leave(): void;
    /**
     * @param {string|null} joinRef
     * @param {string} event
     * @param {any} payload
     */
    onWsFrame(joinRef: string | null, event: string, payload: any): void;
    /** @param {{ event?: unknown, payload?: unknown, meta?: unknown }} msg */
    _onBroadcast(msg: {
        event?: unknown;
        payload?: unknown;
        meta?: unknown;
    }): void;
    /**
     * True while a message this client sent may have been stored without its ack reaching the client
     * (the connection went away first): with `self: false`, what arrives meanwhile (a replay may hold
     * that message) waits until the resent message's ack says where it was stored.
     */
    holdingOwn(): boolean;
    /** Delivers the held messages once nothing is uncertain any more. */
    releaseHeld(): void;
    /**
     * True when this client sent the message with this `meta` (known by the id of an HTTP send or by
     * the position an ack reported).
     * @param {Record<string, any>} meta
     */
    isOwn(meta: Record<string, any>): boolean;
    /** @param {BroadcastMessage} message */
    deliver(message: BroadcastMessage): void;
    /** @param {unknown} payload */
    onPostgres(payload: unknown): void;
    /** @param {any} payload */
    _onSystem(payload: any): void;
    /** @param {unknown} raw */
    _onPresenceState(raw: unknown): void;
    /** @param {unknown} raw */
    _onPresenceDiff(raw: unknown): void;
    /** @param {{ joins: PresenceJoinEvent[], leaves: PresenceLeaveEvent[] }} change */
    emitPresence(change: {
        joins: PresenceJoinEvent[];
        leaves: PresenceLeaveEvent[];
    }): void;
    /**
     * SSE: the endpoint refused this channel.
     * @param {string} reason
     */
    _refuseSse(reason: string): void;
    /** SSE: the stream carrying this channel opened. */
    _sseJoined(): void;
    /**
     * Tells the app that messages may have been missed.
     * @param {TransportName} transport
     * @param {string} reason
     */
    _unrecovered(transport: TransportName, reason: string): void;
    /**
     * @param {string} event
     * @param {any} payload
     * @param {SendOptions} options
     * @returns {Promise<SendResult>}
     */
    send(event: string, payload: any, options: SendOptions): Promise<SendResult>;
    /** @param {OutboxItem} item */
    removeItem(item: OutboxItem): void;
    flushOutbox(): void;
    /**
     * @param {WsTransport} conn
     * @param {OutboxItem} item
     */
    pushBroadcast(conn: WsTransport, item: OutboxItem): void;
    /** SSE transport: sends the outbox over `POST /api/broadcast`. */
    flushHttp(): Promise<void>;
    /**
     * @param {OutboxItem[]} items
     * @param {() => Promise<Response>} request
     */
    settleHttp(items: OutboxItem[], request: () => Promise<Response>): Promise<void>;
    /**
     * @param {'track'|'untrack'} event
     * @param {Record<string, any>} [state]
     * @returns {Promise<void>}
     */
    pushPresence(event: "track" | "untrack", state?: Record<string, any>): Promise<void>;
    /** @returns {ChannelInfo} */
    info(): ChannelInfo;
}
/**
 * A tiny event emitter; `on` returns the function that removes the listener.
 * @template {Record<string, any>} Events
 */
declare class Emitter<Events extends Record<string, any>> {
    /** @param {Logger} logger */
    constructor(logger: Logger);
    logger: Logger;
    /** @type {Map<string, Set<(value: any) => void>>} */
    listeners: Map<string, Set<(value: any) => void>>;
    /**
     * @template {keyof Events & string} K
     * @param {K} type
     * @param {(value: Events[K]) => void} fn
     * @returns {() => void}
     */
    on<K extends keyof Events & string>(type: K, fn: (value: Events[K]) => void): () => void;
    /**
     * @template {keyof Events & string} K
     * @param {K} type
     * @param {Events[K]} value
     */
    emit<K extends keyof Events & string>(type: K, value: Events[K]): void;
}
/**
 * @typedef {object} PendingReply
 * @property {(reply: { status: string, response: any }|null, why: 'reply'|'timeout'|'closed') => void} onReply
 * @property {unknown} timer
 */
/** One WebSocket connection attempt (and, once open, the live socket). */
declare class WsTransport {
    /**
     * @param {Herald} client
     * @param {string} token
     */
    constructor(client: Herald, token: string);
    /** @type {'websocket'} */
    kind: "websocket";
    client: Herald;
    opened: boolean;
    dead: boolean;
    createdAt: number;
    /** @type {Map<string, PendingReply>} */
    pending: Map<string, PendingReply>;
    /** @type {unknown} */
    heartbeatTimer: unknown;
    /** @type {unknown} */
    heartbeatDeadline: unknown;
    url: string;
    /** @type {any} */
    ws: any;
    openTimer: unknown;
    /**
     * Ends this connection (once) and reports it to the client.
     * @param {string} reason
     */
    fail(reason: string): void;
    /** Stops everything without reporting. */
    teardown(): void;
    scheduleHeartbeat(): void;
    /**
     * @param {unknown[]} frame
     * @returns {boolean} whether it was written
     */
    sendText(frame: unknown[]): boolean;
    /**
     * @param {Uint8Array} bytes
     * @returns {boolean}
     */
    sendBinary(bytes: Uint8Array): boolean;
    /**
     * Sends a frame whose reply (matched by `ref`) goes to `onReply`.
     * @param {unknown[]} frame `[join_ref, ref, topic, event, payload]`
     * @param {PendingReply['onReply']} onReply
     * @param {number} [timeoutMs]
     * @param {Uint8Array} [binary] sent instead of the text frame when given
     * @returns {boolean}
     */
    push(frame: unknown[], onReply: PendingReply["onReply"], timeoutMs?: number, binary?: Uint8Array): boolean;
    /** @param {unknown} data */
    onData(data: unknown): void;
    close(): void;
}
/**
 * @typedef {object} SseStream
 * @property {string} key 'public' or 'private'
 * @property {boolean} private
 * @property {string[]} topics
 * @property {boolean} presence
 * @property {string} signature
 * @property {any} es
 * @property {boolean} opened
 * @property {boolean} superseded A newer stream for the same group has opened.
 * @property {Set<string>} resumable Topics whose `system` "recovered: false" is reported to the app.
 */
/** Server-Sent Events: one `EventSource` per channel privacy (public, private). */
declare class SseTransport {
    /**
     * @param {Herald} client
     * @param {string} token
     */
    constructor(client: Herald, token: string);
    /** @type {'sse'} */
    kind: "sse";
    client: Herald;
    token: string;
    opened: boolean;
    dead: boolean;
    createdAt: number;
    /** @type {Map<string, SseStream>} */
    streams: Map<string, SseStream>;
    /** @type {SseStream[]} streams replaced by newer ones, closed once those open */
    retiring: SseStream[];
    /** @type {unknown} */
    syncTimer: unknown;
    openTimer: unknown;
    start(): void;
    markOpen(): void;
    /** Re-evaluates the streams soon (coalesces several channel changes into one reopen). */
    scheduleSync(): void;
    /** Opens, replaces or closes streams so they carry exactly the wanted channels. */
    sync(): void;
    /**
     * @param {string} key
     * @param {boolean} isPrivate
     * @param {string[]} topics
     * @param {boolean} presence
     * @param {string} signature
     * @param {boolean} replacing a live stream of the group stays open until this one opens
     */
    openStream(key: string, isPrivate: boolean, topics: string[], presence: boolean, signature: string, replacing: boolean): void;
    /**
     * @param {string} reason
     * @param {number|undefined} status
     */
    fail(reason: string, status: number | undefined): void;
    teardown(): void;
    close(): void;
}
