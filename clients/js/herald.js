// @ts-check
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
export const PROTOCOL_VERSION = '2.0.0';

/** The client's version. */
export const VERSION = '0.1.0';

/**
 * @typedef {'connecting'|'live'|'reconnecting'|'offline'|'closed'|'failed'} ConnectionStateName
 */

/**
 * @typedef {'websocket'|'sse'} TransportName
 */

/**
 * The connection state, as a value (`client.state`) and as the payload of the `state` event.
 * @typedef {object} ConnectionState
 * @property {ConnectionStateName} state
 * @property {TransportName|null} transport The transport in use or being tried.
 * @property {number} attempt Consecutive failed attempts so far (0 while live).
 * @property {number|null} delay While `reconnecting`: milliseconds until the next attempt.
 * @property {string|null} reason Why the connection is not live (`failed`, `reconnecting`, `closed`).
 * @property {number} since Clock time (ms) at which this state was entered.
 */

/**
 * An injectable clock; every timer of the client goes through it.
 * @typedef {object} Clock
 * @property {() => number} now Milliseconds since the Unix epoch.
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(handle: unknown) => void} clearTimeout
 */

/**
 * Backoff settings: full jitter, delay drawn from [0, min(capMs, baseMs * 2^(attempt-1))).
 * @typedef {object} BackoffOptions
 * @property {number} [baseMs] Default 500.
 * @property {number} [capMs] Default 30000.
 * @property {number} [maxAttempts] Consecutive failed attempts before `failed`; default Infinity.
 */

/**
 * A `sessionStorage`-like store (only these three methods are used).
 * @typedef {object} StorageLike
 * @property {(key: string) => string|null} getItem
 * @property {(key: string, value: string) => void} setItem
 * @property {(key: string) => void} removeItem
 */

/**
 * Something with `addEventListener` / `removeEventListener` (a `window`, a `document`, an
 * `EventTarget`).
 * @typedef {object} EventTargetLike
 * @property {(type: string, listener: (ev: any) => void) => void} addEventListener
 * @property {(type: string, listener: (ev: any) => void) => void} removeEventListener
 * @property {{ onLine?: boolean }} [navigator]
 * @property {string} [visibilityState]
 */

/**
 * @callback TokenCallback
 * @param {'connect'|'refresh'|'rejoin'} reason Why a token is wanted.
 * @returns {string|Promise<string>}
 */

/**
 * @callback Logger
 * @param {'debug'|'info'|'warn'|'error'} level
 * @param {string} message
 * @param {unknown} [detail]
 * @returns {void}
 */

/**
 * @typedef {object} HeraldOptions
 * @property {string} [token] The JWT to connect with (sent as `apikey`).
 * @property {TokenCallback} [getToken] Called for a token on every connection attempt, before a
 *   channel rejoins after the server closed it, and shortly before the current token expires
 *   (`refreshLeadMs`).
 * @property {TransportName[]} [transports] In order of preference; default `['websocket', 'sse']`.
 * @property {any} [WebSocket] A WebSocket constructor (default: the global one).
 * @property {any} [EventSource] An EventSource constructor (default: the global one).
 * @property {typeof fetch|null} [fetch] A fetch implementation (default: the global one; `null`: none,
 *   so no HTTP sends and no auth probe).
 * @property {BackoffOptions} [backoff]
 * @property {() => number} [random] Random source in [0, 1) for jitter (default `Math.random`).
 * @property {Clock} [clock] Timers and time (default: the real ones).
 * @property {number} [heartbeatIntervalMs] Default 25000.
 * @property {number} [heartbeatTimeoutMs] A heartbeat unanswered this long ends the socket; default 10000.
 * @property {number} [connectTimeoutMs] Default 10000.
 * @property {number} [joinTimeoutMs] Default 10000.
 * @property {number} [sendTimeoutMs] How long `send` keeps trying before it rejects; default 10000.
 * @property {number} [refreshLeadMs] Refresh the token this long before it expires (at most half its
 *   remaining life); default 60000.
 * @property {number} [fallbackAfter] Consecutive failed opens of a transport before the next one in
 *   `transports` is tried; default 2.
 * @property {number} [authFailureAfter] Consecutive immediate failures that, together with a token
 *   callback error or a token expired by its own `exp`, mean `failed` when no HTTP probe is
 *   possible; also consecutive token callback errors that mean `failed`. Default 3.
 * @property {number} [immediateFailureMs] A transport that fails within this long of being created
 *   failed "immediately"; default 2000.
 * @property {StorageLike|null} [storage] Where the SSE cursor is kept (default: `sessionStorage` when
 *   available; `null` turns persistence off).
 * @property {string} [storageKey] Prefix of the storage keys; default `herald:<http base URL>`.
 * @property {EventTargetLike|null} [window] Source of `online` / `offline` events (default: `window`).
 * @property {EventTargetLike|null} [document] Source of `visibilitychange` (default: `document`).
 * @property {Logger} [logger] Default: errors to `console.error`, nothing else.
 * @property {string} [socketPath] Default `/socket/websocket`.
 * @property {string} [ssePath] Default `/sse`.
 * @property {string} [apiPath] Default `/api`.
 * @property {boolean} [autoConnect] Connect when the first channel subscribes; default true.
 */

/**
 * Join options of a channel (the `config` of `phx_join`).
 * @typedef {object} ChannelOptions
 * @property {{ self?: boolean, ack?: boolean }} [broadcast] `self`: receive your own broadcasts
 *   (default false). `ack`: `send` resolves when Herald accepted the message (default true; false
 *   resolves once written to the socket).
 * @property {{ key?: string, enabled?: boolean }} [presence] Presence is enabled when `enabled`, when
 *   a `key` is set, or when a presence listener is registered.
 * @property {boolean} [private] A private channel (default false).
 * @property {ChannelHistoryOptions} [history] Recent messages to receive on the first join (WebSocket):
 *   `{ since, limit }`. Later rejoins recover from the last message seen instead.
 */

/**
 * What the first join of a channel asks for (`config.broadcast.replay`): the newest `limit` messages
 * sent since `since`, oldest first, delivered with `meta.replayed: true`. Channels without history
 * replay nothing.
 * @typedef {object} ChannelHistoryOptions
 * @property {number|Date} [since] Milliseconds since the Unix epoch (or a `Date`); default 0, everything
 *   the channel still keeps.
 * @property {number} [limit] At most this many messages (1 to 1000); default: the server's (25).
 */

/**
 * @typedef {object} BroadcastMessage
 * @property {'broadcast'} type
 * @property {string} topic The channel name (without `realtime:`).
 * @property {string} event
 * @property {any} payload JSON value, or a `Uint8Array` for raw-bytes broadcasts.
 * @property {{ id?: string, offset?: number, epoch?: string, replayed?: boolean, [k: string]: unknown }} meta
 */

/**
 * @typedef {object} RecoveryEvent
 * @property {false} recovered Always false: messages may have been missed; reload the state.
 * @property {string} topic
 * @property {TransportName} transport
 * @property {string} reason
 * @property {string} [table] For Postgres Changes: the table (`schema.table`) whose missed changes
 *   could not be replayed.
 */

/**
 * @typedef {'closed'|'joining'|'joined'|'errored'} ChannelStatus
 */

/**
 * @typedef {object} ChannelStatusEvent
 * @property {ChannelStatus} status
 * @property {string|null} reason
 */

/**
 * @typedef {{ event?: string, schema?: string, table?: string, filter?: string }} PostgresChangesFilter
 */

/**
 * @typedef {Record<string, Array<Record<string, any>>>} PresenceMap
 */

/**
 * @typedef {object} PresenceJoinEvent
 * @property {string} key
 * @property {Array<Record<string, any>>} currentPresences Metas under `key` before the join.
 * @property {Array<Record<string, any>>} newPresences
 */

/**
 * @typedef {object} PresenceLeaveEvent
 * @property {string} key
 * @property {Array<Record<string, any>>} currentPresences Metas still under `key` after the leave.
 * @property {Array<Record<string, any>>} leftPresences
 */

/**
 * What `send` resolves with. `offset` and `epoch` say where Herald stored the message, when the channel
 * keeps history and the send was acknowledged over the WebSocket (`broadcast.ack`, the default); they
 * match `meta.offset` and `meta.epoch` of the message as others receive it.
 * @typedef {object} SendResult
 * @property {'ok'} status
 * @property {number} [offset]
 * @property {string} [epoch]
 */

/**
 * @typedef {object} SendOptions
 * @property {string} [idempotencyKey] Default: a fresh random key (retries reuse it).
 * @property {number} [timeoutMs] Default: the client's `sendTimeoutMs`.
 */

/**
 * @typedef {object} ChannelInfo
 * @property {string} name
 * @property {ChannelStatus} status
 * @property {number} handles Live `Channel` handles sharing the join.
 * @property {{ epoch: string, offset: number }|null} position
 * @property {{ delivered: number, duplicates: number }} stats
 */

const WS_OPEN = 1;
const TOPIC_PREFIX = 'realtime:';
const SEEN_LIMIT = 4096;

/** @type {Clock} */
const systemClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(/** @type {any} */ (handle)),
};

/** @type {Logger} */
const defaultLogger = (level, message, detail) => {
  if (level === 'error' && typeof console !== 'undefined') console.error(`[herald] ${message}`, detail ?? '');
};

// ---------------------------------------------------------------------------------------------
// Pure helpers (exported for tests and for advanced use)
// ---------------------------------------------------------------------------------------------

/**
 * Full-jitter exponential backoff: a delay drawn uniformly from
 * `[0, min(capMs, baseMs * 2^(attempt - 1)))`, rounded down.
 * @param {number} attempt 1 for the first retry.
 * @param {{ baseMs?: number, capMs?: number }} [options]
 * @param {() => number} [random]
 * @returns {number}
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const baseMs = options.baseMs ?? 500;
  const capMs = options.capMs ?? 30_000;
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(attempt, 1) - 1, 40));
  return Math.floor(random() * ceiling);
}

/**
 * Decodes base64 or base64url text to bytes.
 * @param {string} text
 * @returns {Uint8Array}
 */
export function base64ToBytes(text) {
  let s = text.replace(/-/g, '+').replace(/_/g, '/');
  while (s.length % 4 !== 0) s += '=';
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * The claims of a JWT (not verified), or null when it cannot be decoded.
 * @param {string|null|undefined} token
 * @returns {Record<string, any>|null}
 */
export function decodeJwt(token) {
  if (typeof token !== 'string') return null;
  const part = token.split('.')[1];
  if (!part) return null;
  try {
    const claims = JSON.parse(new TextDecoder().decode(base64ToBytes(part)));
    return claims && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}

/**
 * When a JWT expires, in milliseconds since the epoch, from its `exp` claim; null if unknown.
 * @param {string|null|undefined} token
 * @returns {number|null}
 */
export function tokenExpiresAt(token) {
  const claims = decodeJwt(token);
  return claims && typeof claims.exp === 'number' ? claims.exp * 1000 : null;
}

/**
 * Decodes a binary kind-4 broadcast frame (protocol 2.0.0):
 * `[4, topic_len, event_len, meta_len, encoding, topic, event, meta JSON, payload]`.
 * `encoding` 1 means a JSON payload (parsed), 0 raw bytes (a `Uint8Array`).
 * @param {ArrayBuffer|ArrayBufferView} data
 * @returns {{ topic: string, event: string, meta: Record<string, any>, payload: any, binary: boolean }|null}
 *   null for anything that is not a well-formed kind-4 frame.
 */
export function decodeBroadcastFrame(data) {
  const bytes =
    data instanceof Uint8Array
      ? data
      : ArrayBuffer.isView(data)
        ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
        : new Uint8Array(data);
  if (bytes.length < 5 || bytes[0] !== 4) return null;
  const [, topicLen, eventLen, metaLen, encoding] = bytes;
  if (encoding !== 0 && encoding !== 1) return null;
  let at = 5;
  if (at + topicLen + eventLen + metaLen > bytes.length) return null;
  const text = new TextDecoder();
  const take = (/** @type {number} */ n) => {
    const piece = bytes.subarray(at, at + n);
    at += n;
    return piece;
  };
  try {
    const topic = text.decode(take(topicLen));
    const event = text.decode(take(eventLen));
    const metaText = text.decode(take(metaLen));
    const meta = metaText ? JSON.parse(metaText) : {};
    const body = bytes.subarray(at);
    const payload = encoding === 1 ? JSON.parse(text.decode(body)) : body.slice();
    return { topic, event, meta: meta && typeof meta === 'object' ? meta : {}, payload, binary: encoding === 0 };
  } catch {
    return null;
  }
}

/**
 * Encodes a binary kind-3 push (a raw-bytes broadcast from the client):
 * `[3, join_ref_len, ref_len, topic_len, event_len, meta_len, 0, join_ref, ref, topic, event, meta, payload]`.
 * @param {{ joinRef: string, ref: string, topic: string, event: string, meta?: Record<string, unknown>, payload: Uint8Array }} push
 * @returns {Uint8Array}
 */
export function encodePushFrame({ joinRef, ref, topic, event, meta, payload }) {
  const enc = new TextEncoder();
  const parts = [joinRef, ref, topic, event, meta ? JSON.stringify(meta) : ''].map((s) => enc.encode(s));
  for (const p of parts) if (p.length > 255) throw new Error('binary push header field longer than 255 bytes');
  const size = 7 + parts.reduce((n, p) => n + p.length, 0) + payload.length;
  const out = new Uint8Array(size);
  out[0] = 3;
  parts.forEach((p, i) => {
    out[1 + i] = p.length;
  });
  out[6] = 0;
  let at = 7;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  out.set(payload, at);
  return out;
}

/**
 * A fresh random id (UUID v4 where `crypto.randomUUID` exists).
 * @returns {string}
 */
export function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') {
    try {
      return c.randomUUID();
    } catch {
      // not a secure context
    }
  }
  const bytes = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i += 1) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A set that forgets its oldest entries beyond a limit. */
export class BoundedSet {
  /** @param {number} [limit] */
  constructor(limit = SEEN_LIMIT) {
    this.limit = limit;
    /** @type {Set<string>} */
    this.items = new Set();
  }

  /** @param {string} value */
  has(value) {
    return this.items.has(value);
  }

  /** @param {string} value */
  add(value) {
    if (this.items.has(value)) return;
    this.items.add(value);
    if (this.items.size > this.limit) {
      const oldest = this.items.values().next().value;
      if (oldest !== undefined) this.items.delete(oldest);
    }
  }

  clear() {
    this.items.clear();
  }
}

/**
 * De-duplicates a channel's messages by position `(epoch, offset)` and by message id (`meta.id`),
 * and tracks the channel's position (the highest offset seen in the current epoch), which is what a
 * rejoin asks to recover from.
 */
export class Deduper {
  /** @param {number} [limit] How many positions and ids are remembered. */
  constructor(limit = SEEN_LIMIT) {
    /** @type {{ epoch: string, offset: number }|null} */
    this.position = null;
    this.positions = new BoundedSet(limit);
    this.ids = new BoundedSet(limit);
    this.duplicates = 0;
  }

  /**
   * True when the message with this `meta` is new (and records it), false for a duplicate.
   * @param {unknown} meta
   * @returns {boolean}
   */
  accept(meta) {
    if (!meta || typeof meta !== 'object') return true;
    const m = /** @type {Record<string, unknown>} */ (meta);
    const id = typeof m.id === 'string' && m.id !== '' ? m.id : null;
    const hasPosition = typeof m.offset === 'number' && typeof m.epoch === 'string' && m.epoch !== '';
    const posKey = hasPosition ? `${m.epoch}:${m.offset}` : null;
    if ((id !== null && this.ids.has(id)) || (posKey !== null && this.positions.has(posKey))) {
      this.duplicates += 1;
      return false;
    }
    if (hasPosition) {
      const epoch = /** @type {string} */ (m.epoch);
      const offset = /** @type {number} */ (m.offset);
      const p = this.position;
      if (p && p.epoch === epoch && offset <= p.offset && offset <= p.offset - this.positions.limit) {
        // Older than anything remembered: it was delivered long ago.
        this.duplicates += 1;
        return false;
      }
      if (!p || p.epoch !== epoch || offset > p.offset) this.position = { epoch, offset };
      this.positions.add(/** @type {string} */ (posKey));
    }
    if (id !== null) this.ids.add(id);
    return true;
  }

  /**
   * Moves the position (a join reply's start position).
   * @param {{ epoch: string, offset: number }|null} position
   */
  reset(position) {
    this.position = position;
  }
}

/**
 * @param {PresenceMap} state
 * @returns {PresenceMap}
 */
function clonePresence(state) {
  /** @type {PresenceMap} */
  const out = {};
  for (const [key, metas] of Object.entries(state)) out[key] = metas.slice();
  return out;
}

/**
 * @param {unknown} raw `{ key: { metas: [...] } }` as Herald sends it.
 * @returns {PresenceMap}
 */
function presenceFromWire(raw) {
  /** @type {PresenceMap} */
  const out = {};
  if (!raw || typeof raw !== 'object') return out;
  for (const [key, value] of Object.entries(raw)) {
    const metas = value && typeof value === 'object' && Array.isArray(value.metas) ? value.metas : [];
    out[key] = metas.slice();
  }
  return out;
}

/**
 * Presence state of one channel: `presence_state` replaces it, `presence_diff` applies joins then
 * leaves, metas are told apart by `phx_ref` (the Phoenix Presence algorithm). Each change yields a
 * new state object, so it can serve as an immutable snapshot.
 */
export class PresenceState {
  constructor() {
    /** @type {PresenceMap} */
    this.state = {};
  }

  /**
   * Replaces the state with a full `presence_state`; returns the joins and leaves it implies.
   * @param {unknown} raw
   * @returns {{ joins: PresenceJoinEvent[], leaves: PresenceLeaveEvent[] }}
   */
  syncState(raw) {
    const next = presenceFromWire(raw);
    /** @type {PresenceMap} */
    const joins = {};
    /** @type {PresenceMap} */
    const leaves = {};
    for (const [key, metas] of Object.entries(this.state)) {
      if (!next[key]) leaves[key] = metas;
    }
    for (const [key, metas] of Object.entries(next)) {
      const current = this.state[key];
      if (!current) {
        joins[key] = metas;
        continue;
      }
      const nextRefs = new Set(metas.map((m) => m.phx_ref));
      const curRefs = new Set(current.map((m) => m.phx_ref));
      const joined = metas.filter((m) => !curRefs.has(m.phx_ref));
      const left = current.filter((m) => !nextRefs.has(m.phx_ref));
      if (joined.length) joins[key] = joined;
      if (left.length) leaves[key] = left;
    }
    return this.applyDiff(joins, leaves);
  }

  /**
   * Applies a `presence_diff` payload `{ joins, leaves }`.
   * @param {unknown} raw
   * @returns {{ joins: PresenceJoinEvent[], leaves: PresenceLeaveEvent[] }}
   */
  syncDiff(raw) {
    const diff = raw && typeof raw === 'object' ? /** @type {Record<string, unknown>} */ (raw) : {};
    return this.applyDiff(presenceFromWire(diff.joins), presenceFromWire(diff.leaves));
  }

  /**
   * @param {PresenceMap} joins
   * @param {PresenceMap} leaves
   * @returns {{ joins: PresenceJoinEvent[], leaves: PresenceLeaveEvent[] }}
   */
  applyDiff(joins, leaves) {
    const state = clonePresence(this.state);
    /** @type {PresenceJoinEvent[]} */
    const joinEvents = [];
    /** @type {PresenceLeaveEvent[]} */
    const leaveEvents = [];
    for (const [key, newMetas] of Object.entries(joins)) {
      const current = state[key] ?? [];
      const newRefs = new Set(newMetas.map((m) => m.phx_ref));
      state[key] = [...current.filter((m) => !newRefs.has(m.phx_ref)), ...newMetas];
      joinEvents.push({ key, currentPresences: current, newPresences: newMetas });
    }
    for (const [key, leftMetas] of Object.entries(leaves)) {
      const current = state[key];
      if (!current) continue;
      const leftRefs = new Set(leftMetas.map((m) => m.phx_ref));
      const remaining = current.filter((m) => !leftRefs.has(m.phx_ref));
      if (remaining.length) state[key] = remaining;
      else delete state[key];
      leaveEvents.push({ key, currentPresences: remaining, leftPresences: leftMetas });
    }
    this.state = state;
    return { joins: joinEvents, leaves: leaveEvents };
  }
}

/**
 * A tiny event emitter; `on` returns the function that removes the listener.
 * @template {Record<string, any>} Events
 */
class Emitter {
  /** @param {Logger} logger */
  constructor(logger) {
    this.logger = logger;
    /** @type {Map<string, Set<(value: any) => void>>} */
    this.listeners = new Map();
  }

  /**
   * @template {keyof Events & string} K
   * @param {K} type
   * @param {(value: Events[K]) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) {
      set = new Set();
      this.listeners.set(type, set);
    }
    const wrapped = (/** @type {any} */ v) => fn(v);
    set.add(wrapped);
    return () => {
      set.delete(wrapped);
    };
  }

  /**
   * @template {keyof Events & string} K
   * @param {K} type
   * @param {Events[K]} value
   */
  emit(type, value) {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (err) {
        this.logger('error', `a "${type}" listener threw`, err);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {object} PendingReply
 * @property {(reply: { status: string, response: any }|null, why: 'reply'|'timeout'|'closed') => void} onReply
 * @property {unknown} timer
 */

/** One WebSocket connection attempt (and, once open, the live socket). */
class WsTransport {
  /**
   * @param {Herald} client
   * @param {string} token
   */
  constructor(client, token) {
    /** @type {'websocket'} */
    this.kind = 'websocket';
    this.client = client;
    this.opened = false;
    this.dead = false;
    this.createdAt = client._clock.now();
    /** @type {Map<string, PendingReply>} */
    this.pending = new Map();
    /** @type {unknown} */
    this.heartbeatTimer = null;
    /** @type {unknown} */
    this.heartbeatDeadline = null;
    const url = new URL(client.socketUrl);
    url.searchParams.set('apikey', token);
    url.searchParams.set('vsn', PROTOCOL_VERSION);
    this.url = url.toString();
    const WS = client._o.WebSocket;
    /** @type {any} */
    this.ws = new WS(this.url);
    try {
      this.ws.binaryType = 'arraybuffer';
    } catch {
      // some implementations do not allow it
    }
    this.openTimer = client._clock.setTimeout(() => this.fail('connect timeout'), client._o.connectTimeoutMs);
    this.ws.onopen = () => {
      if (this.dead) return;
      client._clock.clearTimeout(this.openTimer);
      this.opened = true;
      this.scheduleHeartbeat();
      client._onTransportOpen(this);
    };
    this.ws.onmessage = (/** @type {{ data: any }} */ ev) => {
      if (!this.dead) this.onData(ev.data);
    };
    this.ws.onerror = () => {
      // The close event follows and carries what little a browser is told.
    };
    this.ws.onclose = (/** @type {{ code?: number, reason?: string }} */ ev) => {
      if (this.dead) return;
      this.fail(`socket closed (${ev?.code ?? 'no code'}${ev?.reason ? `: ${ev.reason}` : ''})`);
    };
  }

  /**
   * Ends this connection (once) and reports it to the client.
   * @param {string} reason
   */
  fail(reason) {
    if (this.dead) return;
    const wasOpen = this.opened;
    this.teardown();
    if (wasOpen) this.client._onTransportDown(this, reason);
    else this.client._onTransportFail(this, { reason, immediate: this.client._clock.now() - this.createdAt < this.client._o.immediateFailureMs });
  }

  /** Stops everything without reporting. */
  teardown() {
    if (this.dead) return;
    this.dead = true;
    const clock = this.client._clock;
    clock.clearTimeout(this.openTimer);
    clock.clearTimeout(this.heartbeatTimer);
    clock.clearTimeout(this.heartbeatDeadline);
    const ws = this.ws;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = () => {};
    try {
      if (typeof ws.terminate === 'function') ws.terminate();
      else ws.close(1000, 'client closing');
    } catch {
      // already closed
    }
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clock.clearTimeout(p.timer);
      p.onReply(null, 'closed');
    }
  }

  scheduleHeartbeat() {
    const { heartbeatIntervalMs, heartbeatTimeoutMs } = this.client._o;
    const clock = this.client._clock;
    this.heartbeatTimer = clock.setTimeout(() => {
      if (this.dead) return;
      const ref = this.client._makeRef();
      this.heartbeatDeadline = clock.setTimeout(() => this.fail('heartbeat timeout'), heartbeatTimeoutMs);
      this.pending.set(ref, {
        timer: null,
        onReply: (reply) => {
          if (reply) clock.clearTimeout(this.heartbeatDeadline);
        },
      });
      this.sendText([null, ref, 'phoenix', 'heartbeat', {}]);
      this.scheduleHeartbeat();
    }, heartbeatIntervalMs);
  }

  /**
   * @param {unknown[]} frame
   * @returns {boolean} whether it was written
   */
  sendText(frame) {
    if (this.dead || this.ws.readyState !== WS_OPEN) return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch (err) {
      this.client._log('warn', 'send failed', err);
      return false;
    }
  }

  /**
   * @param {Uint8Array} bytes
   * @returns {boolean}
   */
  sendBinary(bytes) {
    if (this.dead || this.ws.readyState !== WS_OPEN) return false;
    try {
      this.ws.send(bytes);
      return true;
    } catch (err) {
      this.client._log('warn', 'send failed', err);
      return false;
    }
  }

  /**
   * Sends a frame whose reply (matched by `ref`) goes to `onReply`.
   * @param {unknown[]} frame `[join_ref, ref, topic, event, payload]`
   * @param {PendingReply['onReply']} onReply
   * @param {number} [timeoutMs]
   * @param {Uint8Array} [binary] sent instead of the text frame when given
   * @returns {boolean}
   */
  push(frame, onReply, timeoutMs, binary) {
    const ref = /** @type {string} */ (frame[1]);
    const clock = this.client._clock;
    const timer =
      timeoutMs === undefined || !Number.isFinite(timeoutMs)
        ? null
        : clock.setTimeout(() => {
            if (this.pending.delete(ref)) onReply(null, 'timeout');
          }, timeoutMs);
    this.pending.set(ref, { onReply, timer });
    const ok = binary ? this.sendBinary(binary) : this.sendText(frame);
    if (!ok) {
      this.pending.delete(ref);
      clock.clearTimeout(timer);
    }
    return ok;
  }

  /** @param {unknown} data */
  onData(data) {
    if (typeof data === 'string') {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch {
        this.client._log('warn', 'undecodable text frame', data);
        return;
      }
      if (!Array.isArray(frame) || frame.length < 5) return;
      const [joinRef, ref, topic, event, payload] = frame;
      if (event === 'phx_reply' && typeof ref === 'string') {
        const p = this.pending.get(ref);
        if (p) {
          this.pending.delete(ref);
          this.client._clock.clearTimeout(p.timer);
          p.onReply(payload && typeof payload === 'object' ? payload : { status: 'error', response: {} }, 'reply');
        }
        return;
      }
      this.client._onFrame(joinRef, topic, event, payload);
      return;
    }
    if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
      const msg = decodeBroadcastFrame(/** @type {ArrayBuffer|ArrayBufferView} */ (data));
      if (!msg) {
        this.client._log('warn', 'undecodable binary frame');
        return;
      }
      this.client._onFrame(null, msg.topic, 'broadcast', {
        type: 'broadcast',
        event: msg.event,
        payload: msg.payload,
        meta: msg.meta,
      });
    }
  }

  close() {
    this.teardown();
  }
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
class SseTransport {
  /**
   * @param {Herald} client
   * @param {string} token
   */
  constructor(client, token) {
    /** @type {'sse'} */
    this.kind = 'sse';
    this.client = client;
    this.token = token;
    this.opened = false;
    this.dead = false;
    this.createdAt = client._clock.now();
    /** @type {Map<string, SseStream>} */
    this.streams = new Map();
    /** @type {SseStream[]} streams replaced by newer ones, closed once those open */
    this.retiring = [];
    /** @type {unknown} */
    this.syncTimer = null;
    this.openTimer = client._clock.setTimeout(() => this.fail('connect timeout', undefined), client._o.connectTimeoutMs);
  }

  start() {
    this.sync();
    if (this.streams.size === 0) this.markOpen();
  }

  markOpen() {
    if (this.opened || this.dead) return;
    this.opened = true;
    this.client._clock.clearTimeout(this.openTimer);
    this.client._onTransportOpen(this);
  }

  /** Re-evaluates the streams soon (coalesces several channel changes into one reopen). */
  scheduleSync() {
    if (this.dead || this.syncTimer !== null) return;
    this.syncTimer = this.client._clock.setTimeout(() => {
      this.syncTimer = null;
      this.sync();
    }, 0);
  }

  /** Opens, replaces or closes streams so they carry exactly the wanted channels. */
  sync() {
    if (this.dead) return;
    const groups = this.client._sseGroups();
    for (const [key, stream] of this.streams) {
      if (!groups.has(key)) {
        this.streams.delete(key);
        closeEventSource(stream.es);
      }
    }
    for (const [key, group] of groups) {
      const current = this.streams.get(key);
      const signature = `${group.topics.join('\u0000')}|${group.presence}|${this.token}`;
      if (current && current.signature === signature) continue;
      if (current) this.retiring.push(current);
      this.openStream(key, group.private, group.topics, group.presence, signature, Boolean(current && current.opened));
    }
  }

  /**
   * @param {string} key
   * @param {boolean} isPrivate
   * @param {string[]} topics
   * @param {boolean} presence
   * @param {string} signature
   * @param {boolean} replacing a live stream of the group stays open until this one opens
   */
  openStream(key, isPrivate, topics, presence, signature, replacing) {
    const client = this.client;
    const record = client._loadCursor(key);
    const url = new URL(client.sseUrl);
    for (const t of topics) url.searchParams.append('topic', t);
    url.searchParams.set('apikey', this.token);
    if (presence) url.searchParams.set('presence', '1');
    if (isPrivate) url.searchParams.set('private', '1');
    if (record) url.searchParams.set('last_event_id', record.cursor);
    /** @type {Set<string>} */
    const resumable = new Set();
    if (!replacing) {
      for (const t of topics) {
        const topic = client._topics.get(t);
        if ((topic && topic.everJoined) || (record && record.topics.includes(t))) resumable.add(t);
      }
    }
    const ES = client._o.EventSource;
    /** @type {SseStream} */
    const stream = {
      key,
      private: isPrivate,
      topics,
      presence,
      signature,
      es: new ES(url.toString()),
      opened: false,
      superseded: false,
      resumable,
    };
    this.streams.set(key, stream);
    const es = stream.es;
    const mine = () => !this.dead && (this.streams.get(key) === stream || this.retiring.includes(stream));
    /** @param {{ data: string, lastEventId?: string }} ev */
    const parse = (ev) => {
      try {
        return JSON.parse(ev.data);
      } catch {
        client._log('warn', 'undecodable SSE data', ev.data);
        return null;
      }
    };
    /** @param {{ lastEventId?: string }} ev */
    const saveCursor = (ev) => {
      if (!stream.superseded && ev.lastEventId) client._saveCursor(key, ev.lastEventId, topics);
    };
    /** @param {string} name */
    const topicOf = (name) => {
      const t = client._topics.get(name);
      return t && t.private === isPrivate ? t : null;
    };
    es.addEventListener('open', () => {
      if (!mine()) return;
      stream.opened = true;
      if (!record) {
        // No cursor to resume from: channels that were live before may have missed messages.
        for (const t of resumable) topicOf(t)?._unrecovered('sse', 'no cursor to resume from');
      }
      for (const t of topics) topicOf(t)?._sseJoined();
      for (const old of this.retiring.filter((s) => s.key === key)) {
        old.superseded = true;
        closeEventSource(old.es);
      }
      this.retiring = this.retiring.filter((s) => s.key !== key);
      if ([...this.streams.values()].every((s) => s.opened)) this.markOpen();
    });
    es.addEventListener('error', (/** @type {{ code?: number }} */ ev) => {
      if (!mine()) return;
      const status = typeof ev?.code === 'number' ? ev.code : undefined;
      if (status === 400 || status === 403) {
        // The stream's channels themselves are refused (a bad name, or private channels this token
        // may not read): report them and leave them out of the next streams.
        const reason = status === 403 ? 'Unauthorized: this token may not read these channels' : 'the server refused these channel names';
        for (const t of topics) topicOf(t)?._refuseSse(reason);
        // Only this stream goes; the others carry on.
        closeEventSource(es);
        if (this.streams.get(key) === stream) this.streams.delete(key);
        this.retiring = this.retiring.filter((s) => s !== stream);
        if (!this.opened && [...this.streams.values()].every((s) => s.opened)) this.markOpen();
        return;
      }
      this.fail(`event stream error${status ? ` (HTTP ${status})` : ''}`, status);
    });
    es.addEventListener('ready', (/** @type {any} */ ev) => {
      // Sent once the stream's channels are subscribed (after any replay), with the stream's first
      // cursor: kept, so a stream that drops before its first broadcast still resumes.
      if (mine()) saveCursor(ev);
    });
    es.addEventListener('broadcast', (/** @type {any} */ ev) => {
      if (!mine()) return;
      const data = parse(ev);
      if (!data || typeof data.topic !== 'string') return;
      const payload =
        data.encoding === 'base64' && typeof data.payload === 'string' ? base64ToBytes(data.payload) : data.payload;
      topicOf(data.topic)?._onBroadcast({ event: data.event, payload, meta: data.meta ?? {} });
      saveCursor(ev);
    });
    es.addEventListener('system', (/** @type {any} */ ev) => {
      if (!mine()) return;
      const data = parse(ev);
      if (!data) return;
      if (typeof data.topic !== 'string') {
        // A stream-wide error (its token expired): Herald ends the stream after it.
        if (data.status === 'error') {
          if (this.streams.get(key) === stream) {
            this.fail(`event stream ended: ${data.message ?? 'error'}`, undefined);
          } else {
            closeEventSource(es);
            this.retiring = this.retiring.filter((s) => s !== stream);
          }
        }
        return;
      }
      const topic = topicOf(data.topic);
      if (!topic) return;
      if (data.recovered === false) {
        if (stream.resumable.has(data.topic)) topic._unrecovered('sse', 'the server could not resume from the cursor');
      } else {
        topic._onSystem(data);
      }
    });
    es.addEventListener('presence_state', (/** @type {any} */ ev) => {
      if (!mine() || stream.superseded) return;
      const data = parse(ev);
      if (data && typeof data.topic === 'string') topicOf(data.topic)?._onPresenceState(data.payload);
    });
    es.addEventListener('presence_diff', (/** @type {any} */ ev) => {
      if (!mine() || stream.superseded) return;
      const data = parse(ev);
      if (data && typeof data.topic === 'string') topicOf(data.topic)?._onPresenceDiff(data.payload);
    });
  }

  /**
   * @param {string} reason
   * @param {number|undefined} status
   */
  fail(reason, status) {
    if (this.dead) return;
    const wasOpen = this.opened;
    this.teardown();
    if (wasOpen) this.client._onTransportDown(this, reason);
    else
      this.client._onTransportFail(this, {
        reason,
        status,
        immediate: this.client._clock.now() - this.createdAt < this.client._o.immediateFailureMs,
      });
  }

  teardown() {
    if (this.dead) return;
    this.dead = true;
    this.client._clock.clearTimeout(this.openTimer);
    this.client._clock.clearTimeout(this.syncTimer);
    for (const s of [...this.streams.values(), ...this.retiring]) closeEventSource(s.es);
    this.streams.clear();
    this.retiring = [];
  }

  close() {
    this.teardown();
  }
}

/** @param {any} es */
function closeEventSource(es) {
  try {
    es.close();
  } catch {
    // already closed
  }
}

// ---------------------------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {object} OutboxItem
 * @property {string} event
 * @property {any} payload
 * @property {string} key idempotency key
 * @property {boolean} inFlight
 * @property {boolean} uncertain written, but the connection went away before the ack: it may be stored
 * @property {(value: SendResult) => void} resolve
 * @property {(err: Error) => void} reject
 * @property {unknown} timer
 * @property {number} deadline
 */

/**
 * @typedef {object} Listener
 * @property {string} type
 * @property {any} filter
 * @property {(value: any) => void} callback
 * @property {number|null} [bindingId] postgres_changes: the id the server gave this binding
 */

const NON_RETRYABLE = ['unmatched topic', 'TopicNameRequired'];
const AUTH_REASONS = ['InvalidJWTToken', 'MalformedJWT', 'JwtSignatureError', 'Unauthorized'];

/**
 * One server-side subscription of a topic, shared by every `Channel` handle of that name.
 * @internal
 */
class Topic {
  /**
   * @param {Herald} client
   * @param {string} name
   * @param {ChannelOptions} options
   */
  constructor(client, name, options) {
    this.client = client;
    this.name = name;
    this.options = options;
    this.wireTopic = TOPIC_PREFIX + name;
    this.private = options.private === true;
    this.self = options.broadcast?.self === true;
    this.ack = options.broadcast?.ack !== false;
    this.presenceKey = options.presence?.key ?? '';
    this.presenceOption = options.presence?.enabled === true || this.presenceKey !== '';
    this.history = historyRequest(options.history);
    /** A join asking for `history` was accepted: later joins recover instead. */
    this.historyServed = false;
    /** @type {{ epoch: string, offset: number } | null} where the channel stood when its history replay was served */
    this.replayTop = null;
    /** @type {'recover'|'replay'|'start'} what the current join asked for */
    this.joinMode = 'start';
    /** @type {Set<Channel>} */
    this.handles = new Set();
    /** @type {ChannelStatus} */
    this.status = 'closed';
    /** @type {string|null} */
    this.statusReason = null;
    /** @type {string|null} */
    this.joinRef = null;
    this.everJoined = false;
    this.dedup = new Deduper();
    this.delivered = 0;
    this.presence = new PresenceState();
    /** @type {Record<string, any>|null} */
    this.tracked = null;
    /** @type {OutboxItem[]} */
    this.outbox = [];
    /** ids of messages this client sent over HTTP (for `self: false` on SSE) */
    this.ownIds = new BoundedSet(1024);
    /** `epoch:offset` of messages this client sent, from the acks (for `self: false` in replays) */
    this.ownPositions = new BoundedSet(1024);
    /** @type {BroadcastMessage[]} accepted messages held back until this client's own can be told apart */
    this.held = [];
    /** @type {Listener[]} the postgres_changes bindings sent in the current join */
    this.joinedBindings = [];
    /** @type {Record<string, { epoch: string, offset: number }>} last change seen per table log */
    this.pgPositions = {};
    this.joinedPresence = false;
    this.joinedPresenceKey = '';
    /** @type {string|null} why the SSE endpoint refused this channel (it is left out of streams) */
    this.sseRefused = null;
    this.rejoinAttempt = 0;
    /** @type {unknown} */
    this.rejoinTimer = null;
    /** @type {unknown} */
    this.leaveTimer = null;
    /** @type {string|null} */
    this.lastSystemError = null;
    this.httpFlushing = false;
    /** @type {unknown} */
    this.httpRetryTimer = null;
  }

  get wanted() {
    return this.handles.size > 0;
  }

  /** Presence is on for this join: configured, or a presence listener exists. */
  wantsPresence() {
    if (this.presenceOption || this.tracked) return true;
    for (const h of this.handles) if (h._listeners.some((l) => l.type === 'presence')) return true;
    return false;
  }

  /** @returns {Listener[]} */
  bindings() {
    /** @type {Listener[]} */
    const out = [];
    for (const h of this.handles) for (const l of h._listeners) if (l.type === 'postgres_changes') out.push(l);
    return out;
  }

  /**
   * @param {ChannelStatus} status
   * @param {string|null} [reason]
   */
  setStatus(status, reason = null) {
    if (this.status === status && this.statusReason === reason) return;
    this.status = status;
    this.statusReason = reason;
    for (const h of [...this.handles]) h._emitter.emit('status', { status, reason });
  }

  /** @param {Channel} handle */
  attach(handle) {
    this.handles.add(handle);
    if (this.leaveTimer !== null) {
      this.client._clock.clearTimeout(this.leaveTimer);
      this.leaveTimer = null;
    }
    if (this.handles.size === 1 || this.status === 'closed') this.start();
    else this.configChanged();
  }

  /** @param {Channel} handle */
  detach(handle) {
    if (!this.handles.delete(handle)) return;
    if (this.handles.size > 0) {
      this.configChanged();
      return;
    }
    // Leave on the next tick, so that an unmount followed at once by a mount (React StrictMode)
    // keeps the one join instead of leaving and joining again.
    if (this.leaveTimer === null) {
      this.leaveTimer = this.client._clock.setTimeout(() => {
        this.leaveTimer = null;
        if (this.handles.size === 0) this.leave();
      }, 0);
    }
  }

  /** The handles' needs changed (presence, postgres bindings): rejoin when they differ from the join's. */
  configChanged() {
    const conn = this.client._conn;
    if (!conn || !conn.opened) return;
    if (conn.kind === 'sse') {
      conn.scheduleSync();
      return;
    }
    if (this.status !== 'joined' && this.status !== 'joining') return;
    const bindings = this.bindings();
    const same =
      bindings.length === this.joinedBindings.length && bindings.every((b, i) => b === this.joinedBindings[i]);
    if (!same || this.wantsPresence() !== this.joinedPresence || this.presenceKey !== this.joinedPresenceKey) this.join();
  }

  start() {
    const client = this.client;
    if (client._o.autoConnect && client._wantConnection === false && client.state.state === 'closed') {
      client.connect();
      return;
    }
    const conn = client._conn;
    if (conn && conn.opened) {
      if (conn.kind === 'websocket' && this.joinRef) this.configChanged();
      else this.transportUp();
    } else if (this.status === 'closed' && client._wantConnection) this.setStatus('joining');
  }

  /** The transport is live: (re)join. */
  transportUp() {
    if (!this.wanted) return;
    const conn = this.client._conn;
    if (!conn) return;
    if (conn.kind === 'websocket') this.join();
    else {
      if (this.sseRefused) return;
      if (this.status !== 'joined') this.setStatus('joining');
      conn.scheduleSync();
      this.flushOutbox();
    }
  }

  /** The transport went away: wait for the next one. */
  transportDown() {
    this.joinRef = null;
    this.clearRejoin();
    for (const item of this.outbox) item.inFlight = false;
    if (this.wanted && !this.sseRefused) this.setStatus(this.client._wantConnection ? 'joining' : 'closed');
  }

  clearRejoin() {
    if (this.rejoinTimer !== null) {
      this.client._clock.clearTimeout(this.rejoinTimer);
      this.rejoinTimer = null;
    }
  }

  /**
   * Sends `phx_join` on the WebSocket: recover from the last position seen; without one, the
   * `history` replay until a join asking for it is accepted, else the empty position (which only
   * learns where the channel is).
   */
  join() {
    const conn = this.client._conn;
    if (!conn || conn.kind !== 'websocket' || !conn.opened || !this.wanted) return;
    this.clearRejoin();
    const ref = this.client._makeRef();
    this.joinRef = ref;
    this.lastSystemError = null;
    for (const item of this.outbox) item.inFlight = false;
    this.setStatus('joining');
    const bindings = this.bindings();
    this.joinedBindings = bindings;
    this.joinedPresence = this.wantsPresence();
    this.joinedPresenceKey = this.presenceKey;
    // The last message seen, else where the channel stood when a (possibly empty) replay was served.
    const position = this.dedup.position ?? this.replayTop;
    /** @type {Record<string, unknown>} */
    const broadcast = { self: this.self, ack: this.ack };
    if (position) {
      this.joinMode = 'recover';
      broadcast.recover = { epoch: position.epoch, offset: position.offset };
    } else if (this.history && !this.historyServed) {
      this.joinMode = 'replay';
      broadcast.replay = { ...this.history };
    } else {
      this.joinMode = 'start';
      broadcast.recover = { epoch: '', offset: 0 };
    }
    const payload = {
      config: {
        broadcast,
        presence: { enabled: this.joinedPresence, key: this.presenceKey },
        postgres_changes: bindings.map((b) => ({ event: '*', ...b.filter })),
        private: this.private,
        // Ask for the changes missed since the last one seen of each table (ignored by servers
        // without table logs).
        ...(bindings.length > 0 ? { postgres_changes_options: { recover: { ...this.pgPositions } } } : {}),
      },
      access_token: this.client._token,
    };
    conn.push(
      [ref, ref, this.wireTopic, 'phx_join', payload],
      (reply, why) => this.onJoinReply(ref, reply, why),
      this.client._o.joinTimeoutMs,
    );
  }

  /**
   * @param {string} ref
   * @param {{ status: string, response: any }|null} reply
   * @param {'reply'|'timeout'|'closed'} why
   */
  onJoinReply(ref, reply, why) {
    if (ref !== this.joinRef) return;
    if (!reply) {
      if (why === 'timeout') {
        this.setStatus('errored', 'join timed out');
        this.scheduleRejoin();
      }
      return;
    }
    const response = reply.response && typeof reply.response === 'object' ? reply.response : {};
    if (reply.status !== 'ok') {
      const reason = typeof response.reason === 'string' ? response.reason : 'join refused';
      this.joinRef = null;
      this.setStatus('errored', reason);
      const retry =
        !NON_RETRYABLE.some((r) => reason.startsWith(r)) &&
        (this.client._o.getToken !== null || !AUTH_REASONS.some((r) => reason.startsWith(r)));
      if (retry) this.scheduleRejoin();
      return;
    }
    const wasJoined = this.everJoined;
    this.everJoined = true;
    this.rejoinAttempt = 0;
    // A history replay's reply says where the channel stood (`recovery`, always recovered): the
    // replayed messages that follow are at or below it, later ones arrive live. If nothing is replayed
    // or arrives, a rejoin recovers from there.
    const rec = response.recovery;
    if (this.joinMode === 'replay') {
      this.historyServed = true;
      this.replayTop =
        rec && typeof rec === 'object' && typeof rec.epoch === 'string' && rec.epoch !== ''
          ? { epoch: rec.epoch, offset: Number(rec.offset) || 0 }
          : null;
    }
    if (rec && typeof rec === 'object') {
      if (rec.recovered !== true) {
        const epoch = typeof rec.epoch === 'string' && rec.epoch !== '' ? rec.epoch : null;
        this.dedup.reset(epoch ? { epoch, offset: Number(rec.offset) || 0 } : null);
        // After a history replay that returned nothing, the channel had no position to recover
        // from: this join only learns it.
        const learning = this.joinMode === 'start' && this.historyServed && epoch !== null;
        if (wasJoined && !learning) this._unrecovered('websocket', 'the server could not replay the missed messages');
      }
    }
    const echoed = Array.isArray(response.postgres_changes) ? response.postgres_changes : [];
    this.joinedBindings.forEach((b, i) => {
      const id = echoed[i] && typeof echoed[i].id === 'number' ? echoed[i].id : null;
      b.bindingId = id;
    });
    this.setStatus('joined');
    for (const h of [...this.handles]) h._resolveReady();
    this.flushOutbox();
    if (this.tracked) this.pushPresence('track', this.tracked).catch((err) => this.client._log('warn', 're-track failed', err));
  }

  scheduleRejoin() {
    this.clearRejoin();
    this.rejoinAttempt += 1;
    const delay = backoffDelay(this.rejoinAttempt, this.client._o.backoff, this.client._o.random);
    this.rejoinTimer = this.client._clock.setTimeout(async () => {
      this.rejoinTimer = null;
      if (!this.wanted) return;
      if (this.client._o.getToken) {
        try {
          await this.client._fetchToken('rejoin');
        } catch (err) {
          this.client._log('warn', 'token callback failed before a rejoin', err);
        }
      }
      this.join();
    }, delay);
  }

  leave() {
    this.clearRejoin();
    const conn = this.client._conn;
    if (conn && conn.kind === 'websocket' && conn.opened && this.joinRef) {
      const ref = this.client._makeRef();
      conn.push([this.joinRef, ref, this.wireTopic, 'phx_leave', {}], () => {}, this.client._o.joinTimeoutMs);
    }
    this.joinRef = null;
    this.setStatus('closed');
    this.held = [];
    for (const item of this.outbox.splice(0)) {
      this.client._clock.clearTimeout(item.timer);
      item.reject(new Error('channel left before the message was sent'));
    }
    if (this.client._topics.get(this.name) === this) this.client._topics.delete(this.name);
    if (conn && conn.kind === 'sse') conn.scheduleSync();
  }

  /**
   * @param {string|null} joinRef
   * @param {string} event
   * @param {any} payload
   */
  onWsFrame(joinRef, event, payload) {
    const current = joinRef === null || joinRef === this.joinRef;
    switch (event) {
      case 'broadcast':
        if (payload && typeof payload === 'object') this._onBroadcast(payload);
        break;
      case 'presence_state':
        if (current) this._onPresenceState(payload);
        break;
      case 'presence_diff':
        if (current) this._onPresenceDiff(payload);
        break;
      case 'postgres_changes':
        this.onPostgres(payload);
        break;
      case 'system':
        if (current) this._onSystem(payload);
        break;
      case 'phx_close':
      case 'phx_error':
        if (joinRef !== null && joinRef === this.joinRef) {
          this.joinRef = null;
          this.setStatus('errored', this.lastSystemError ?? (event === 'phx_close' ? 'closed by the server' : 'channel error'));
          this.scheduleRejoin();
        }
        break;
      default:
        break;
    }
  }

  /** @param {{ event?: unknown, payload?: unknown, meta?: unknown }} msg */
  _onBroadcast(msg) {
    const meta = msg.meta && typeof msg.meta === 'object' ? /** @type {Record<string, any>} */ (msg.meta) : {};
    if (!this.dedup.accept(meta)) return;
    /** @type {BroadcastMessage} */
    const message = {
      type: 'broadcast',
      topic: this.name,
      event: typeof msg.event === 'string' ? msg.event : '',
      payload: msg.payload,
      meta,
    };
    if (this.held.length > 0 || this.holdingOwn()) {
      this.held.push(message);
      return;
    }
    this.deliver(message);
  }

  /**
   * True while a message this client sent may have been stored without its ack reaching the client
   * (the connection went away first): with `self: false`, what arrives meanwhile (a replay may hold
   * that message) waits until the resent message's ack says where it was stored.
   */
  holdingOwn() {
    return !this.self && this.ack && this.outbox.some((i) => i.uncertain);
  }

  /** Delivers the held messages once nothing is uncertain any more. */
  releaseHeld() {
    if (this.held.length === 0 || this.holdingOwn()) return;
    for (const message of this.held.splice(0)) this.deliver(message);
  }

  /**
   * True when this client sent the message with this `meta` (known by the id of an HTTP send or by
   * the position an ack reported).
   * @param {Record<string, any>} meta
   */
  isOwn(meta) {
    if (typeof meta.id === 'string' && this.ownIds.has(meta.id)) return true;
    return typeof meta.offset === 'number' && typeof meta.epoch === 'string' && this.ownPositions.has(`${meta.epoch}:${meta.offset}`);
  }

  /** @param {BroadcastMessage} message */
  deliver(message) {
    // With `self: false` Herald leaves this client's messages out of live delivery, but a replay
    // after a reconnect holds them too.
    if (!this.self && this.isOwn(message.meta)) return;
    this.delivered += 1;
    for (const h of [...this.handles]) h._dispatchBroadcast(message);
  }

  /** @param {unknown} payload */
  onPostgres(payload) {
    if (!payload || typeof payload !== 'object') return;
    const p = /** @type {Record<string, any>} */ (payload);
    const ids = Array.isArray(p.ids) ? p.ids : [];
    const data = p.data ?? p;
    // De-duplicate by the change's place in its table's log, and remember it for recovery.
    const pos = data && typeof data === 'object' ? data.position : null;
    if (pos && typeof pos.log === 'string' && typeof pos.offset === 'number' && typeof pos.epoch === 'string') {
      const seen = this.pgPositions[pos.log];
      if (seen && seen.epoch === pos.epoch && pos.offset <= seen.offset) return;
      this.pgPositions[pos.log] = { epoch: pos.epoch, offset: pos.offset };
    }
    for (const b of this.joinedBindings) {
      if (b.bindingId !== null && b.bindingId !== undefined && ids.includes(b.bindingId)) {
        try {
          b.callback(data);
        } catch (err) {
          this.client._log('error', 'a postgres_changes listener threw', err);
        }
      }
    }
  }

  /** @param {any} payload */
  _onSystem(payload) {
    // A Postgres Changes subscription reports each table log's recovery.
    const rec = payload && typeof payload === 'object' && payload.extension === 'postgres_changes' ? payload.recovery : null;
    if (rec && typeof rec === 'object') {
      for (const [table, r] of Object.entries(rec)) {
        if (!r || typeof r !== 'object') continue;
        const asked = this.pgPositions[table];
        if (r.recovered === false && asked) {
          /** @type {RecoveryEvent} */
          const event = { recovered: false, topic: this.name, transport: 'websocket', reason: 'changes of this table could not be replayed', table };
          for (const h of [...this.handles]) h._emitter.emit('recovery', event);
        }
        if (typeof r.epoch === 'string' && typeof r.offset === 'number' && (!asked || r.recovered === false)) {
          // Where the table stood: later changes are new; on recovered:false, start again from here.
          this.pgPositions[table] = { epoch: r.epoch, offset: r.offset };
        }
      }
    }
    if (payload && typeof payload === 'object' && payload.status === 'error' && typeof payload.message === 'string') {
      this.lastSystemError = payload.message;
    }
    for (const h of [...this.handles]) h._emitter.emit('system', payload);
  }

  /** @param {unknown} raw */
  _onPresenceState(raw) {
    this.emitPresence(this.presence.syncState(raw));
  }

  /** @param {unknown} raw */
  _onPresenceDiff(raw) {
    this.emitPresence(this.presence.syncDiff(raw));
  }

  /** @param {{ joins: PresenceJoinEvent[], leaves: PresenceLeaveEvent[] }} change */
  emitPresence(change) {
    for (const h of [...this.handles]) {
      for (const j of change.joins) h._dispatchPresence('join', j);
      for (const l of change.leaves) h._dispatchPresence('leave', l);
      h._dispatchPresence('sync', undefined);
    }
  }

  /**
   * SSE: the endpoint refused this channel.
   * @param {string} reason
   */
  _refuseSse(reason) {
    this.sseRefused = reason;
    this.setStatus('errored', reason);
  }

  /** SSE: the stream carrying this channel opened. */
  _sseJoined() {
    if (!this.wanted) return;
    this.everJoined = true;
    this.setStatus('joined');
    for (const h of [...this.handles]) h._resolveReady();
    this.flushOutbox();
  }

  /**
   * Tells the app that messages may have been missed.
   * @param {TransportName} transport
   * @param {string} reason
   */
  _unrecovered(transport, reason) {
    /** @type {RecoveryEvent} */
    const event = { recovered: false, topic: this.name, transport, reason };
    for (const h of [...this.handles]) h._emitter.emit('recovery', event);
  }

  /**
   * @param {string} event
   * @param {any} payload
   * @param {SendOptions} options
   * @returns {Promise<SendResult>}
   */
  send(event, payload, options) {
    const timeoutMs = options.timeoutMs ?? this.client._o.sendTimeoutMs;
    const key = options.idempotencyKey ?? randomId();
    return new Promise((resolve, reject) => {
      /** @type {OutboxItem} */
      const item = {
        event,
        payload,
        key,
        inFlight: false,
        uncertain: false,
        resolve,
        reject,
        timer: null,
        deadline: this.client._clock.now() + timeoutMs,
      };
      item.timer = this.client._clock.setTimeout(() => {
        this.removeItem(item);
        reject(new Error(`send of "${event}" timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.outbox.push(item);
      this.flushOutbox();
    });
  }

  /** @param {OutboxItem} item */
  removeItem(item) {
    const i = this.outbox.indexOf(item);
    if (i >= 0) this.outbox.splice(i, 1);
    this.client._clock.clearTimeout(item.timer);
    this.releaseHeld();
  }

  flushOutbox() {
    const conn = this.client._conn;
    if (!conn || !conn.opened || this.outbox.length === 0) return;
    if (conn.kind === 'websocket') {
      if (this.status !== 'joined' || !this.joinRef) return;
      for (const item of this.outbox) {
        if (!item.inFlight) this.pushBroadcast(conn, item);
      }
    } else {
      this.flushHttp();
    }
  }

  /**
   * @param {WsTransport} conn
   * @param {OutboxItem} item
   */
  pushBroadcast(conn, item) {
    const joinRef = /** @type {string} */ (this.joinRef);
    const ref = this.client._makeRef();
    const raw = item.payload instanceof Uint8Array || item.payload instanceof ArrayBuffer;
    const binary = raw
      ? encodePushFrame({
          joinRef,
          ref,
          topic: this.wireTopic,
          event: item.event,
          meta: { idempotency_key: item.key },
          payload: item.payload instanceof Uint8Array ? item.payload : new Uint8Array(item.payload),
        })
      : undefined;
    const frame = [
      joinRef,
      ref,
      this.wireTopic,
      'broadcast',
      { type: 'broadcast', event: item.event, payload: item.payload, meta: { idempotency_key: item.key } },
    ];
    item.inFlight = true;
    if (!this.ack) {
      const ok = binary ? conn.sendBinary(binary) : conn.sendText(frame);
      if (ok) {
        this.removeItem(item);
        item.resolve({ status: 'ok' });
      } else item.inFlight = false;
      return;
    }
    const written = conn.push(
      frame,
      (reply, why) => {
        if (!reply) {
          // The connection went away before the ack: sent again, with the same key, after the
          // rejoin (Herald stores a key once, and acks the repeat with the first one's position).
          item.inFlight = false;
          if (why === 'closed') item.uncertain = true;
          return;
        }
        if (!this.outbox.includes(item)) return;
        if (reply.status === 'ok') {
          const result = sendResult(reply.response);
          if (result.epoch !== undefined) this.ownPositions.add(`${result.epoch}:${result.offset}`);
          this.removeItem(item);
          item.resolve(result);
        } else {
          this.removeItem(item);
          item.reject(new Error(reply.response?.reason ?? 'broadcast refused'));
        }
      },
      undefined,
      binary,
    );
    if (!written) item.inFlight = false;
  }

  /** SSE transport: sends the outbox over `POST /api/broadcast`. */
  async flushHttp() {
    if (this.httpFlushing) return;
    const items = this.outbox.filter((i) => !i.inFlight);
    if (items.length === 0) return;
    this.httpFlushing = true;
    for (const i of items) i.inFlight = true;
    try {
      const json = items.filter((i) => !(i.payload instanceof Uint8Array || i.payload instanceof ArrayBuffer));
      const raw = items.filter((i) => i.payload instanceof Uint8Array || i.payload instanceof ArrayBuffer);
      if (json.length) {
        for (const i of json) this.ownIds.add(i.key);
        const body = {
          messages: json.map((i) => ({
            topic: this.name,
            event: i.event,
            payload: i.payload,
            private: this.private,
            id: i.key,
            idempotency_key: i.key,
          })),
        };
        await this.settleHttp(json, () => this.client._post(`/broadcast`, JSON.stringify(body), 'application/json'));
      }
      for (const i of raw) {
        const path = `/broadcast/${encodeURIComponent(this.name)}/events/${encodeURIComponent(i.event)}${this.private ? '?private=true' : ''}`;
        const bytes = i.payload instanceof Uint8Array ? i.payload : new Uint8Array(i.payload);
        await this.settleHttp([i], () => this.client._post(path, bytes, 'application/octet-stream', { 'idempotency-key': i.key }));
      }
    } finally {
      this.httpFlushing = false;
    }
    if (this.outbox.some((i) => !i.inFlight) && this.httpRetryTimer === null) {
      const delay = backoffDelay(1, this.client._o.backoff, this.client._o.random);
      this.httpRetryTimer = this.client._clock.setTimeout(() => {
        this.httpRetryTimer = null;
        this.flushOutbox();
      }, delay);
    }
  }

  /**
   * @param {OutboxItem[]} items
   * @param {() => Promise<Response>} request
   */
  async settleHttp(items, request) {
    /** @type {Response|null} */
    let res = null;
    try {
      res = await request();
      if (res.status === 401 && this.client._o.getToken) {
        await this.client._fetchToken('refresh');
        res = await request();
      }
    } catch (err) {
      this.client._log('info', 'HTTP send failed; will retry', err);
    }
    const live = items.filter((i) => this.outbox.includes(i));
    if (res && res.status === 202) {
      for (const i of live) {
        this.removeItem(i);
        i.resolve({ status: 'ok' });
      }
    } else if (res && res.status >= 400 && res.status < 500 && res.status !== 429 && res.status !== 408) {
      let text = '';
      try {
        text = await res.text();
      } catch {
        // no body
      }
      for (const i of live) {
        this.removeItem(i);
        i.reject(new Error(`HTTP ${res.status} ${text}`.trim()));
      }
    } else {
      for (const i of live) i.inFlight = false;
    }
  }

  /**
   * @param {'track'|'untrack'} event
   * @param {Record<string, any>} [state]
   * @returns {Promise<void>}
   */
  pushPresence(event, state) {
    const conn = this.client._conn;
    if (!conn || conn.kind !== 'websocket') {
      return Promise.reject(new Error('presence track/untrack needs the WebSocket transport'));
    }
    if (!conn.opened || this.status !== 'joined' || !this.joinRef) return Promise.resolve();
    const ref = this.client._makeRef();
    const payload = event === 'track' ? { type: 'presence', event, payload: state } : { type: 'presence', event };
    return new Promise((resolve, reject) => {
      const ok = conn.push(
        [this.joinRef, ref, this.wireTopic, 'presence', payload],
        (reply) => {
          if (!reply) resolve(); // sent again after the rejoin
          else if (reply.status === 'ok') resolve();
          else reject(new Error(reply.response?.reason ?? 'presence refused'));
        },
        this.client._o.joinTimeoutMs,
      );
      if (!ok) resolve();
    });
  }

  /** @returns {ChannelInfo} */
  info() {
    return {
      name: this.name,
      status: this.status,
      handles: this.handles.size,
      position: this.dedup.position ? { ...this.dedup.position } : null,
      stats: { delivered: this.delivered, duplicates: this.dedup.duplicates },
    };
  }
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
  constructor(client, topic) {
    /** @internal */
    this._client = client;
    /** @internal */
    this._topic = topic;
    /** @internal @type {Listener[]} */
    this._listeners = [];
    /** @internal @type {Emitter<{ status: ChannelStatusEvent, recovery: RecoveryEvent, system: any }>} */
    this._emitter = new Emitter(client._o.logger);
    /** @internal */
    this._subscribed = false;
    /** @internal */
    this._closed = false;
    /** @internal @type {Array<{ resolve: () => void, reject: (e: Error) => void }>} */
    this._waiters = [];
  }

  /** The channel's name (without `realtime:`). */
  get name() {
    return this._topic.name;
  }

  /** @returns {ChannelStatus} */
  get status() {
    return this._closed ? 'closed' : this._topic.status;
  }

  /** The last position seen (`{ epoch, offset }`), or null. */
  get position() {
    const p = this._topic.dedup.position;
    return p ? { ...p } : null;
  }

  /** Messages delivered and duplicates dropped on this channel. */
  get stats() {
    return { delivered: this._topic.delivered, duplicates: this._topic.dedup.duplicates };
  }

  /**
   * @overload
   * @param {'broadcast'} type
   * @param {string | { event?: string }} filter An event name, or `'*'` for all.
   * @param {(message: BroadcastMessage) => void} callback
   * @returns {() => void}
   */
  /**
   * @overload
   * @param {'presence'} type
   * @param {'sync'} filter
   * @param {() => void} callback
   * @returns {() => void}
   */
  /**
   * @overload
   * @param {'presence'} type
   * @param {'join'} filter
   * @param {(event: PresenceJoinEvent) => void} callback
   * @returns {() => void}
   */
  /**
   * @overload
   * @param {'presence'} type
   * @param {'leave'} filter
   * @param {(event: PresenceLeaveEvent) => void} callback
   * @returns {() => void}
   */
  /**
   * @overload
   * @param {'postgres_changes'} type
   * @param {PostgresChangesFilter} filter
   * @param {(change: any) => void} callback
   * @returns {() => void}
   */
  /**
   * @overload
   * @param {'status'} type
   * @param {(event: ChannelStatusEvent) => void} callback
   * @returns {() => void}
   */
  /**
   * @overload
   * @param {'recovery'} type
   * @param {(event: RecoveryEvent) => void} callback
   * @returns {() => void}
   */
  /**
   * @overload
   * @param {'system'} type
   * @param {(payload: any) => void} callback
   * @returns {() => void}
   */
  /**
   * Registers a listener; returns the function that removes it.
   * @param {string} type
   * @param {any} filterOrCallback
   * @param {any} [maybeCallback]
   * @returns {() => void}
   */
  on(type, filterOrCallback, maybeCallback) {
    const callback = typeof filterOrCallback === 'function' ? filterOrCallback : maybeCallback;
    const filter = typeof filterOrCallback === 'function' ? undefined : filterOrCallback;
    if (typeof callback !== 'function') throw new TypeError('on(type, [filter], callback): callback must be a function');
    if (type === 'status' || type === 'recovery' || type === 'system') {
      return this._emitter.on(type, callback);
    }
    if (type !== 'broadcast' && type !== 'presence' && type !== 'postgres_changes') {
      throw new TypeError(`unknown listener type "${type}"`);
    }
    /** @type {Listener} */
    const listener = {
      type,
      filter: type === 'postgres_changes' ? { ...(filter ?? {}) } : normalizeEventFilter(filter),
      callback,
      bindingId: null,
    };
    this._listeners.push(listener);
    if (this._subscribed && !this._closed) this._topic.configChanged();
    return () => {
      const i = this._listeners.indexOf(listener);
      if (i < 0) return;
      this._listeners.splice(i, 1);
      if (this._subscribed && !this._closed && type !== 'broadcast') this._topic.configChanged();
    };
  }

  /**
   * Joins (shared with other handles of this name); the client connects if it is not connected.
   * @returns {this}
   */
  subscribe() {
    if (this._closed) throw new Error('this channel handle was unsubscribed; ask the client for a new one');
    if (this._subscribed) return this;
    this._subscribed = true;
    this._client._attach(this);
    return this;
  }

  /**
   * Resolves once the channel is joined (at once if it is); rejects if this handle is
   * unsubscribed first.
   * @returns {Promise<void>}
   */
  ready() {
    if (this._closed) return Promise.reject(new Error('channel unsubscribed'));
    if (this._subscribed && this._topic.status === 'joined') return Promise.resolve();
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /**
   * Removes this handle's listeners; the join is left when no handle of this name remains.
   * @returns {void}
   */
  unsubscribe() {
    if (this._closed) return;
    this._closed = true;
    this._listeners = [];
    this._emitter.listeners.clear();
    for (const w of this._waiters.splice(0)) w.reject(new Error('channel unsubscribed'));
    if (this._subscribed) this._client._detach(this);
    else {
      const topic = this._topic;
      if (topic.handles.size === 0 && topic.leaveTimer === null && topic.status === 'closed') {
        if (this._client._topics.get(topic.name) === topic) this._client._topics.delete(topic.name);
      }
    }
  }

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
  send(event, payload, options = {}) {
    if (this._closed) return Promise.reject(new Error('channel unsubscribed'));
    if (!this._subscribed) return Promise.reject(new Error('subscribe() before send()'));
    return this._topic.send(event, payload, options);
  }

  /**
   * Publishes this client's presence state on the channel (replacing the previous one); kept and
   * tracked again after every rejoin. WebSocket transport only.
   * @param {Record<string, any>} state
   * @returns {Promise<void>}
   */
  track(state) {
    if (this._closed) return Promise.reject(new Error('channel unsubscribed'));
    const topic = this._topic;
    const conn = this._client._conn;
    if (conn && conn.kind === 'sse') return Promise.reject(new Error('presence track/untrack needs the WebSocket transport'));
    const first = !topic.tracked;
    topic.tracked = { ...state };
    if (first && !topic.joinedPresence) {
      topic.configChanged();
      return Promise.resolve();
    }
    return topic.pushPresence('track', topic.tracked);
  }

  /**
   * Removes this client's presence from the channel.
   * @returns {Promise<void>}
   */
  untrack() {
    const topic = this._topic;
    topic.tracked = null;
    if (this._closed) return Promise.resolve();
    return topic.pushPresence('untrack');
  }

  /**
   * Who is here: presence key → metas (each with its `phx_ref`). A new object after every change.
   * @returns {PresenceMap}
   */
  presenceState() {
    return this._topic.presence.state;
  }

  /** @internal @param {BroadcastMessage} message */
  _dispatchBroadcast(message) {
    for (const l of [...this._listeners]) {
      if (l.type !== 'broadcast') continue;
      if (l.filter !== '*' && l.filter !== message.event) continue;
      try {
        l.callback(message);
      } catch (err) {
        this._client._log('error', 'a broadcast listener threw', err);
      }
    }
  }

  /**
   * @internal
   * @param {'sync'|'join'|'leave'} kind
   * @param {any} value
   */
  _dispatchPresence(kind, value) {
    for (const l of [...this._listeners]) {
      if (l.type !== 'presence' || (l.filter !== kind && l.filter !== '*')) continue;
      try {
        l.callback(value);
      } catch (err) {
        this._client._log('error', 'a presence listener threw', err);
      }
    }
  }

  /** @internal */
  _resolveReady() {
    for (const w of this._waiters.splice(0)) w.resolve();
  }
}

/**
 * The `config.broadcast.replay` of a channel's `history` option, or null without one.
 * @param {ChannelHistoryOptions|undefined} history
 * @returns {{ since: number, limit?: number }|null}
 */
function historyRequest(history) {
  if (!history || typeof history !== 'object') return null;
  const since = Math.floor(Number(history.since ?? 0));
  /** @type {{ since: number, limit?: number }} */
  const out = { since: Number.isFinite(since) && since > 0 ? since : 0 };
  if (typeof history.limit === 'number' && Number.isFinite(history.limit)) {
    out.limit = Math.min(1000, Math.max(1, Math.floor(history.limit)));
  }
  return out;
}

/**
 * What `send` resolves with, from an ok ack's response (`{ offset, epoch }` when stored).
 * @param {any} response
 * @returns {SendResult}
 */
function sendResult(response) {
  const r = response && typeof response === 'object' ? response : {};
  if (typeof r.offset === 'number' && typeof r.epoch === 'string' && r.epoch !== '') {
    return { status: 'ok', offset: r.offset, epoch: r.epoch };
  }
  return { status: 'ok' };
}

/**
 * @param {unknown} filter
 * @returns {string}
 */
function normalizeEventFilter(filter) {
  if (typeof filter === 'string') return filter;
  if (filter && typeof filter === 'object' && typeof (/** @type {any} */ (filter).event) === 'string') {
    return /** @type {any} */ (filter).event;
  }
  return '*';
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/**
 * @param {string} path
 * @returns {string}
 */
function trimSlash(path) {
  return path.endsWith('/') ? path.slice(0, -1) : path;
}

/** @returns {StorageLike|null} */
function defaultStorage() {
  try {
    const s = /** @type {any} */ (globalThis).sessionStorage;
    return s && typeof s.getItem === 'function' ? s : null;
  } catch {
    return null;
  }
}

/**
 * @param {'window'|'document'} name
 * @returns {EventTargetLike|null}
 */
function defaultTarget(name) {
  const t = /** @type {any} */ (globalThis)[name];
  return t && typeof t.addEventListener === 'function' ? t : null;
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
  constructor(url, options = {}) {
    const o = options;
    const base = new URL(url, /** @type {any} */ (globalThis).location?.href);
    const secure = base.protocol === 'https:' || base.protocol === 'wss:';
    const prefix = trimSlash(base.pathname);
    const host = base.host;
    /** Base URL of the HTTP API and SSE. */
    this.httpUrl = `${secure ? 'https' : 'http'}://${host}${prefix}`;
    /** @internal */
    this._o = {
      token: o.token ?? null,
      getToken: o.getToken ?? null,
      transports: (o.transports ?? ['websocket', 'sse']).filter((t) => t === 'websocket' || t === 'sse'),
      WebSocket: o.WebSocket ?? /** @type {any} */ (globalThis).WebSocket,
      EventSource: o.EventSource ?? /** @type {any} */ (globalThis).EventSource,
      fetch:
        o.fetch !== undefined
          ? o.fetch
          : typeof globalThis.fetch === 'function'
            ? globalThis.fetch.bind(globalThis)
            : null,
      backoff: { baseMs: 500, capMs: 30_000, maxAttempts: Infinity, ...(o.backoff ?? {}) },
      random: o.random ?? Math.random,
      heartbeatIntervalMs: o.heartbeatIntervalMs ?? 25_000,
      heartbeatTimeoutMs: o.heartbeatTimeoutMs ?? 10_000,
      connectTimeoutMs: o.connectTimeoutMs ?? 10_000,
      joinTimeoutMs: o.joinTimeoutMs ?? 10_000,
      sendTimeoutMs: o.sendTimeoutMs ?? 10_000,
      refreshLeadMs: o.refreshLeadMs ?? 60_000,
      fallbackAfter: o.fallbackAfter ?? 2,
      authFailureAfter: o.authFailureAfter ?? 3,
      immediateFailureMs: o.immediateFailureMs ?? 2000,
      storage: o.storage === undefined ? defaultStorage() : o.storage,
      storageKey: o.storageKey ?? `herald:${secure ? 'https' : 'http'}://${host}${prefix}`,
      window: o.window === undefined ? defaultTarget('window') : o.window,
      document: o.document === undefined ? defaultTarget('document') : o.document,
      logger: o.logger ?? defaultLogger,
      autoConnect: o.autoConnect !== false,
    };
    this._o.transports = this._o.transports.filter((t) =>
      t === 'websocket' ? typeof this._o.WebSocket === 'function' : typeof this._o.EventSource === 'function',
    );
    if (this._o.transports.length === 0) {
      throw new Error('no usable transport: pass a WebSocket or EventSource implementation');
    }
    /** WebSocket endpoint (without query). */
    this.socketUrl = `${secure ? 'wss' : 'ws'}://${host}${prefix}${o.socketPath ?? '/socket/websocket'}`;
    /** SSE endpoint (without query). */
    this.sseUrl = `${this.httpUrl}${o.ssePath ?? '/sse'}`;
    /** @internal */
    this._apiUrl = `${this.httpUrl}${o.apiPath ?? '/api'}`;
    /** @internal @type {Clock} */
    this._clock = o.clock ?? systemClock;
    /** @internal @type {string|null} */
    this._token = this._o.token;
    /** @internal @type {Promise<string>|null} */
    this._tokenPromise = null;
    /** @internal */
    this._tokenFailures = 0;
    /** @internal @type {unknown} */
    this._refreshTimer = null;
    /** @internal */
    this._refreshAttempt = 0;
    /** @internal @type {Map<string, Topic>} */
    this._topics = new Map();
    /** @internal @type {WsTransport|SseTransport|null} */
    this._conn = null;
    /** @internal */
    this._ref = 0;
    /** @internal */
    this._wantConnection = false;
    /** @internal */
    this._attempt = 0;
    /** @internal */
    this._transportIndex = 0;
    /** @internal */
    this._openFailures = 0;
    /** @internal */
    this._suspectAuth = 0;
    /** @internal @type {unknown} */
    this._reconnectTimer = null;
    /** @internal */
    this._generation = 0;
    /** @internal @type {Emitter<{ state: ConnectionState }>} */
    this._emitter = new Emitter(this._o.logger);
    /** @internal @type {Array<() => void>} */
    this._envCleanup = [];
    /** @internal @type {Map<string, { cursor: string, topics: string[] }>} SSE cursors when there is no storage */
    this._memoryCursors = new Map();
    /** @internal @type {ConnectionState} */
    this._state = Object.freeze({
      state: /** @type {ConnectionStateName} */ ('closed'),
      transport: null,
      attempt: 0,
      delay: null,
      reason: null,
      since: this._clock.now(),
    });
  }

  /**
   * The current connection state (a frozen object; a new one on every change).
   * @returns {ConnectionState}
   */
  get state() {
    return this._state;
  }

  /** The token currently in use, if any. */
  get token() {
    return this._token;
  }

  /**
   * Listens to connection state changes; returns the function that removes the listener.
   * @param {'state'} type
   * @param {(state: ConnectionState) => void} callback
   * @returns {() => void}
   */
  on(type, callback) {
    if (type !== 'state') throw new TypeError(`unknown event "${type}"`);
    return this._emitter.on('state', callback);
  }

  /**
   * A handle on channel `name`. Handles of one name share one join; the first handle's options
   * decide `private`, `broadcast.self`, `broadcast.ack`, `history` and `presence.key`.
   * @param {string} name
   * @param {ChannelOptions} [options]
   * @returns {Channel}
   */
  channel(name, options = {}) {
    if (typeof name !== 'string' || name === '') throw new TypeError('a channel needs a name');
    if (name.startsWith(TOPIC_PREFIX)) name = name.slice(TOPIC_PREFIX.length);
    let topic = this._topics.get(name);
    if (topic && (options.private === true) !== topic.private) {
      throw new Error(`channel "${name}" is already in use with private: ${topic.private}`);
    }
    if (!topic) {
      topic = new Topic(this, name, options);
      this._topics.set(name, topic);
    } else {
      if (options.presence?.enabled || options.presence?.key) topic.presenceOption = true;
      if (options.presence?.key && !topic.presenceKey) topic.presenceKey = options.presence.key;
    }
    return new Channel(this, topic);
  }

  /**
   * The channels in use (for diagnostics).
   * @returns {ChannelInfo[]}
   */
  channels() {
    return [...this._topics.values()].map((t) => t.info());
  }

  /**
   * Starts connecting (a no-op while connecting or live).
   * @returns {void}
   */
  connect() {
    const s = this._state.state;
    if (this._wantConnection && s !== 'closed' && s !== 'failed') return;
    this._wantConnection = true;
    this._attempt = 0;
    this._openFailures = 0;
    this._suspectAuth = 0;
    this._tokenFailures = 0;
    this._installEnvListeners();
    for (const t of this._topics.values()) if (t.wanted && t.status === 'closed') t.setStatus('joining');
    this._startAttempt();
  }

  /**
   * Closes the connection and stops reconnecting; channels stay registered and rejoin on `connect()`.
   * @returns {void}
   */
  disconnect() {
    this._wantConnection = false;
    this._generation += 1;
    this._clearTimer('_reconnectTimer');
    this._clearTimer('_refreshTimer');
    this._removeEnvListeners();
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    for (const t of this._topics.values()) {
      t.transportDown();
      t.setStatus('closed');
    }
    this._setState({ state: 'closed', transport: null, attempt: 0, delay: null, reason: 'disconnected' });
  }

  /**
   * Replaces the token: pushed at once to every joined WebSocket channel (`access_token`), used by
   * the next connection and HTTP send. After `failed`, also reconnects.
   * @param {string} token
   * @returns {void}
   */
  setToken(token) {
    this._applyToken(token);
    if (this._state.state === 'failed' && this._wantConnection) {
      this._wantConnection = false;
      this.connect();
    }
  }

  // -- internals ------------------------------------------------------------------------------

  /** @internal */
  _makeRef() {
    this._ref += 1;
    return String(this._ref);
  }

  /**
   * @internal
   * @param {'debug'|'info'|'warn'|'error'} level
   * @param {string} message
   * @param {unknown} [detail]
   */
  _log(level, message, detail) {
    try {
      this._o.logger(level, message, detail);
    } catch {
      // a logger must not break the client
    }
  }

  /**
   * @internal
   * @param {'_reconnectTimer'|'_refreshTimer'} name
   */
  _clearTimer(name) {
    if (this[name] !== null) {
      this._clock.clearTimeout(this[name]);
      this[name] = null;
    }
  }

  /**
   * @internal
   * @param {Omit<ConnectionState, 'since'>} next
   */
  _setState(next) {
    const prev = this._state;
    if (
      prev.state === next.state &&
      prev.transport === next.transport &&
      prev.attempt === next.attempt &&
      prev.delay === next.delay &&
      prev.reason === next.reason
    ) {
      return;
    }
    this._state = Object.freeze({ ...next, since: this._clock.now() });
    this._log('debug', `state ${next.state}`, next);
    this._emitter.emit('state', this._state);
  }

  /** @internal @param {Channel} handle */
  _attach(handle) {
    let topic = handle._topic;
    if (this._topics.get(topic.name) !== topic) {
      // The topic was left (its last handle went) and this handle outlived it: use the current
      // join of that name, or start a fresh one.
      let current = this._topics.get(topic.name);
      if (!current) {
        current = new Topic(this, topic.name, topic.options);
        this._topics.set(topic.name, current);
      }
      topic = current;
      handle._topic = topic;
    }
    topic.attach(handle);
  }

  /** @internal @param {Channel} handle */
  _detach(handle) {
    handle._topic.detach(handle);
  }

  /** @internal */
  _installEnvListeners() {
    if (this._envCleanup.length) return;
    const win = this._o.window;
    const doc = this._o.document;
    if (win) {
      const online = () => this._onOnline();
      const offline = () => this._onOffline();
      win.addEventListener('online', online);
      win.addEventListener('offline', offline);
      this._envCleanup.push(() => {
        win.removeEventListener('online', online);
        win.removeEventListener('offline', offline);
      });
    }
    if (doc) {
      const visible = () => {
        if (doc.visibilityState === undefined || doc.visibilityState === 'visible') this._retryNow('page visible');
      };
      doc.addEventListener('visibilitychange', visible);
      this._envCleanup.push(() => doc.removeEventListener('visibilitychange', visible));
    }
  }

  /** @internal */
  _removeEnvListeners() {
    for (const f of this._envCleanup.splice(0)) f();
  }

  /** @internal */
  _isOffline() {
    const nav = this._o.window?.navigator;
    return Boolean(nav && nav.onLine === false);
  }

  /** @internal */
  _onOnline() {
    if (!this._wantConnection) return;
    if (this._state.state === 'offline') {
      this._attempt = 0;
      this._startAttempt();
    } else this._retryNow('back online');
  }

  /** @internal */
  _onOffline() {
    if (!this._wantConnection || this._state.state === 'failed') return;
    this._generation += 1;
    this._clearTimer('_reconnectTimer');
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    for (const t of this._topics.values()) t.transportDown();
    this._setState({ state: 'offline', transport: null, attempt: this._attempt, delay: null, reason: 'browser offline' });
  }

  /**
   * While waiting to reconnect, try now.
   * @internal
   * @param {string} why
   */
  _retryNow(why) {
    if (!this._wantConnection || this._state.state !== 'reconnecting') return;
    this._log('debug', `retrying now: ${why}`);
    this._startAttempt();
  }

  /** @internal */
  _currentTransport() {
    return this._o.transports[this._transportIndex % this._o.transports.length];
  }

  /** @internal */
  async _startAttempt() {
    this._clearTimer('_reconnectTimer');
    if (!this._wantConnection) return;
    if (this._isOffline()) {
      this._setState({ state: 'offline', transport: null, attempt: this._attempt, delay: null, reason: 'browser offline' });
      return;
    }
    const generation = ++this._generation;
    const transport = this._currentTransport();
    this._setState({ state: 'connecting', transport, attempt: this._attempt, delay: null, reason: null });
    let token;
    try {
      token = await this._fetchToken('connect');
    } catch (err) {
      if (generation !== this._generation) return;
      this._tokenFailures += 1;
      this._log('warn', 'token callback failed', err);
      if (this._tokenFailures >= this._o.authFailureAfter) {
        this._fail(`token callback failed: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      this._scheduleReconnect('token callback failed');
      return;
    }
    if (generation !== this._generation) return;
    this._tokenFailures = 0;
    if (!token) {
      this._fail('no token: pass `token` or `getToken`');
      return;
    }
    let conn;
    try {
      conn = transport === 'websocket' ? new WsTransport(this, token) : new SseTransport(this, token);
    } catch (err) {
      this._log('warn', `could not create the ${transport} transport`, err);
      this._openFailures += 1;
      if (this._openFailures >= this._o.fallbackAfter && this._o.transports.length > 1) {
        this._transportIndex = (this._transportIndex + 1) % this._o.transports.length;
        this._openFailures = 0;
      }
      this._scheduleReconnect(`could not create the ${transport} transport`);
      return;
    }
    this._conn = conn;
    if (conn instanceof SseTransport) {
      try {
        conn.start();
      } catch (err) {
        conn.fail(`could not open the event stream: ${err instanceof Error ? err.message : String(err)}`, undefined);
      }
    }
  }

  /**
   * @internal
   * @param {WsTransport|SseTransport} conn
   */
  _onTransportOpen(conn) {
    if (conn !== this._conn) return;
    this._attempt = 0;
    this._openFailures = 0;
    this._suspectAuth = 0;
    this._setState({ state: 'live', transport: conn.kind, attempt: 0, delay: null, reason: null });
    for (const t of [...this._topics.values()]) t.transportUp();
  }

  /**
   * A transport failed before it opened.
   * @internal
   * @param {WsTransport|SseTransport} conn
   * @param {{ reason: string, status?: number, immediate: boolean }} info
   */
  async _onTransportFail(conn, info) {
    if (conn !== this._conn) return;
    this._conn = null;
    const generation = this._generation;
    this._openFailures += 1;
    this._log('info', `${conn.kind} failed to open: ${info.reason}`);
    let refused = info.status === 401;
    let probed = false;
    if (!refused && info.status === undefined && this._o.fetch) {
      const status = await this._probeAuth();
      if (generation !== this._generation) return;
      refused = status === 401;
      probed = status !== null;
    }
    if (!refused && info.status === undefined && !probed) {
      // No answer from a probe: repeated immediate failures with a token known to be bad mean `failed`.
      const exp = tokenExpiresAt(this._token);
      const expired = exp !== null && exp <= this._clock.now();
      if (info.immediate && expired) this._suspectAuth += 1;
      else this._suspectAuth = 0;
      if (this._suspectAuth >= this._o.authFailureAfter) {
        this._fail('unauthorized: the token has expired and the server refuses the connection');
        return;
      }
    }
    if (refused) {
      this._fail('unauthorized: the server refused the token');
      return;
    }
    if (this._openFailures >= this._o.fallbackAfter && this._o.transports.length > 1) {
      this._transportIndex = (this._transportIndex + 1) % this._o.transports.length;
      this._openFailures = 0;
      this._log('info', `falling back to ${this._currentTransport()}`);
    }
    this._scheduleReconnect(info.reason);
  }

  /**
   * A live transport went away.
   * @internal
   * @param {WsTransport|SseTransport} conn
   * @param {string} reason
   */
  _onTransportDown(conn, reason) {
    if (conn !== this._conn) return;
    this._conn = null;
    this._log('info', `${conn.kind} lost: ${reason}`);
    for (const t of this._topics.values()) t.transportDown();
    this._scheduleReconnect(reason);
  }

  /**
   * @internal
   * @param {string} reason
   */
  _scheduleReconnect(reason) {
    if (!this._wantConnection) return;
    this._attempt += 1;
    if (this._attempt > this._o.backoff.maxAttempts) {
      this._fail(`gave up after ${this._attempt - 1} attempts: ${reason}`);
      return;
    }
    const delay = backoffDelay(this._attempt, this._o.backoff, this._o.random);
    this._setState({ state: 'reconnecting', transport: this._currentTransport(), attempt: this._attempt, delay, reason });
    this._clearTimer('_reconnectTimer');
    this._reconnectTimer = this._clock.setTimeout(() => {
      this._reconnectTimer = null;
      this._startAttempt();
    }, delay);
  }

  /**
   * @internal
   * @param {string} reason
   */
  _fail(reason) {
    this._generation += 1;
    this._clearTimer('_reconnectTimer');
    const conn = this._conn;
    this._conn = null;
    if (conn) conn.close();
    for (const t of this._topics.values()) t.transportDown();
    this._setState({ state: 'failed', transport: null, attempt: this._attempt, delay: null, reason });
  }

  /**
   * `POST /api/broadcast` with an empty batch: 202 when the token is accepted, 401 when not.
   * @internal
   * @returns {Promise<number|null>} the status, or null when the server could not be reached
   */
  async _probeAuth() {
    try {
      const res = await this._post('/broadcast', '{"messages":[]}', 'application/json');
      try {
        await res.arrayBuffer();
      } catch {
        // body not needed
      }
      return res.status;
    } catch {
      return null;
    }
  }

  /**
   * @internal
   * @param {string} path under the API prefix
   * @param {string|Uint8Array} body
   * @param {string} contentType
   * @param {Record<string, string>} [headers]
   * @returns {Promise<Response>}
   */
  _post(path, body, contentType, headers = {}) {
    const f = this._o.fetch;
    if (!f) return Promise.reject(new Error('no fetch implementation'));
    return f(`${this._apiUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this._token ?? ''}`, 'content-type': contentType, ...headers },
      body: /** @type {any} */ (body),
    });
  }

  /**
   * A token from `getToken` (one call at a time), else the configured one.
   * @internal
   * @param {'connect'|'refresh'|'rejoin'} reason
   * @returns {Promise<string|null>}
   */
  _fetchToken(reason) {
    const getToken = this._o.getToken;
    if (!getToken) return Promise.resolve(this._token);
    if (this._tokenPromise) return this._tokenPromise;
    const p = (async () => {
      try {
        const token = await getToken(reason);
        if (typeof token !== 'string' || token === '') throw new Error('getToken returned no token');
        this._applyToken(token);
        return token;
      } finally {
        this._tokenPromise = null;
      }
    })();
    this._tokenPromise = p;
    return p;
  }

  /**
   * @internal
   * @param {string} token
   */
  _applyToken(token) {
    const changed = token !== this._token;
    this._token = token;
    this._scheduleRefresh();
    if (!changed) return;
    const conn = this._conn;
    for (const t of this._topics.values()) t.sseRefused = null;
    if (conn && conn.kind === 'sse') {
      // Streams carry their token in the URL: replace them (the new one opens before the old closes).
      conn.token = token;
      conn.scheduleSync();
    }
    if (conn && conn.kind === 'websocket' && conn.opened) {
      for (const t of this._topics.values()) {
        if (t.status === 'joined' && t.joinRef) {
          conn.sendText([t.joinRef, this._makeRef(), t.wireTopic, 'access_token', { access_token: token }]);
        }
      }
    }
  }

  /** @internal */
  _scheduleRefresh() {
    this._clearTimer('_refreshTimer');
    if (!this._o.getToken || !this._wantConnection) return;
    const exp = tokenExpiresAt(this._token);
    if (exp === null) return;
    const left = exp - this._clock.now();
    let delay;
    if (left <= 0) {
      // The callback handed out an expired token: ask again later.
      this._refreshAttempt += 1;
      delay = backoffDelay(this._refreshAttempt, this._o.backoff, this._o.random);
    } else {
      this._refreshAttempt = 0;
      const lead = Math.min(this._o.refreshLeadMs, left / 2);
      delay = Math.max(0, Math.floor(left - lead));
    }
    this._refreshTimer = this._clock.setTimeout(() => {
      this._refreshTimer = null;
      this._fetchToken('refresh').catch((err) => {
        this._log('warn', 'token refresh failed', err);
        this._refreshAttempt += 1;
        this._clearTimer('_refreshTimer');
        this._refreshTimer = this._clock.setTimeout(
          () => {
            this._refreshTimer = null;
            this._scheduleRefresh();
          },
          backoffDelay(this._refreshAttempt, this._o.backoff, this._o.random),
        );
      });
    }, delay);
  }

  /**
   * @internal
   * @param {string|null} joinRef
   * @param {unknown} topic
   * @param {unknown} event
   * @param {unknown} payload
   */
  _onFrame(joinRef, topic, event, payload) {
    if (typeof topic !== 'string' || typeof event !== 'string' || !topic.startsWith(TOPIC_PREFIX)) return;
    const t = this._topics.get(topic.slice(TOPIC_PREFIX.length));
    if (t) t.onWsFrame(typeof joinRef === 'string' ? joinRef : null, event, payload);
  }

  /**
   * The SSE streams wanted: channels grouped by privacy.
   * @internal
   * @returns {Map<string, { private: boolean, topics: string[], presence: boolean }>}
   */
  _sseGroups() {
    /** @type {Map<string, { private: boolean, topics: string[], presence: boolean }>} */
    const groups = new Map();
    for (const t of this._topics.values()) {
      if (!t.wanted || t.sseRefused) continue;
      const key = t.private ? 'private' : 'public';
      let g = groups.get(key);
      if (!g) {
        g = { private: t.private, topics: [], presence: false };
        groups.set(key, g);
      }
      g.topics.push(t.name);
      g.presence = g.presence || t.wantsPresence();
    }
    for (const g of groups.values()) g.topics.sort();
    return groups;
  }

  /**
   * @internal
   * @param {string} key
   * @returns {{ cursor: string, topics: string[] }|null}
   */
  _loadCursor(key) {
    const s = this._o.storage;
    if (!s) return this._memoryCursors.get(key) ?? null;
    try {
      const raw = s.getItem(`${this._o.storageKey}:sse:${key}`);
      if (!raw) return this._memoryCursors.get(key) ?? null;
      const v = JSON.parse(raw);
      if (v && typeof v.cursor === 'string' && Array.isArray(v.topics)) return v;
    } catch {
      // unreadable: start without
    }
    return this._memoryCursors.get(key) ?? null;
  }

  /**
   * @internal
   * @param {string} key
   * @param {string} cursor
   * @param {string[]} topics
   */
  _saveCursor(key, cursor, topics) {
    const record = { cursor, topics };
    this._memoryCursors.set(key, record);
    const s = this._o.storage;
    if (!s) return;
    try {
      s.setItem(`${this._o.storageKey}:sse:${key}`, JSON.stringify(record));
    } catch {
      // storage full or denied: the in-memory copy still serves reconnects
    }
  }
}

/**
 * Shorthand for `new Herald(url, options)`.
 * @param {string} url
 * @param {HeraldOptions} [options]
 * @returns {Herald}
 */
export function createClient(url, options) {
  return new Herald(url, options);
}

export default Herald;
