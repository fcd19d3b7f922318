// Test doubles: a fake clock driving every timer of the client, a scriptable WebSocket and
// EventSource, an in-memory storage and event targets for online/offline and visibility.

/** Lets pending promise callbacks run (several rounds, then one macrotask). */
export async function flush() {
  for (let i = 0; i < 10; i += 1) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}

/** A clock whose time only moves when the test advances it. */
export class FakeClock {
  constructor(start = Date.UTC(2030, 0, 1)) {
    this.time = start;
    this.timers = new Map();
    this.seq = 0;
    this.now = () => this.time;
    this.setTimeout = (fn, ms) => {
      this.seq += 1;
      this.timers.set(this.seq, { id: this.seq, at: this.time + Math.max(0, Number(ms) || 0), fn, ms });
      return this.seq;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
  }

  /** Delays (ms from now) of the pending timers, soonest first. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.time).sort((a, b) => a - b);
  }

  /** Runs every timer due within `ms`, in order, letting promises settle between them. */
  async advance(ms) {
    const end = this.time + ms;
    await flush();
    for (;;) {
      let next = null;
      for (const t of this.timers.values()) {
        if (t.at <= end && (!next || t.at < next.at || (t.at === next.at && t.id < next.id))) next = t;
      }
      if (!next) break;
      this.timers.delete(next.id);
      this.time = next.at;
      next.fn();
      await flush();
    }
    this.time = end;
    await flush();
  }
}

/** A WebSocket class whose instances the test drives; `Fake.instances` lists them. */
export function fakeWebSocketClass() {
  class FakeWebSocket {
    static instances = [];

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closed = false;
      this.binaryType = 'blob';
      this.answerHeartbeats = true;
      this.onopen = null;
      this.onmessage = null;
      this.onclose = null;
      this.onerror = null;
      FakeWebSocket.instances.push(this);
    }

    static get last() {
      return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
    }

    send(data) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(data);
      if (this.answerHeartbeats && typeof data === 'string') {
        const f = JSON.parse(data);
        if (f[3] === 'heartbeat') {
          Promise.resolve().then(() => {
            if (this.readyState === 1) this.receive([null, f[1], 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
          });
        }
      }
    }

    close() {
      this.closed = true;
      this.readyState = 3;
    }

    // -- driven by the test --
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    /** Text frames sent so far, parsed. */
    frames() {
      return this.sent.filter((d) => typeof d === 'string').map((d) => JSON.parse(d));
    }

    framesOf(event) {
      return this.frames().filter((f) => f[3] === event);
    }

    receive(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }

    receiveBinary(bytes) {
      this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
    }

    /** The connection dies (or never opens). */
    drop(code = 1006) {
      this.readyState = 3;
      this.onerror?.({});
      this.onclose?.({ code, reason: '' });
    }

    /** Replies ok to the last phx_join of `topic`, with `response`. */
    replyJoin(topic, response = {}) {
      const join = this.framesOf('phx_join').filter((f) => f[2] === `realtime:${topic}`).pop();
      if (!join) throw new Error(`no phx_join for ${topic}`);
      this.receive([join[0], join[1], join[2], 'phx_reply', { status: 'ok', response: { postgres_changes: [], ...response } }]);
      return join;
    }
  }
  return FakeWebSocket;
}

/** An EventSource class whose instances the test drives. */
export function fakeEventSourceClass() {
  class FakeEventSource {
    static instances = [];

    constructor(url) {
      this.url = url;
      this.listeners = new Map();
      this.closed = false;
      FakeEventSource.instances.push(this);
    }

    static get last() {
      return FakeEventSource.instances[FakeEventSource.instances.length - 1];
    }

    addEventListener(type, fn) {
      if (!this.listeners.has(type)) this.listeners.set(type, []);
      this.listeners.get(type).push(fn);
    }

    removeEventListener() {}

    close() {
      this.closed = true;
    }

    get params() {
      return new URL(this.url).searchParams;
    }

    // -- driven by the test --
    dispatch(type, ev) {
      for (const fn of this.listeners.get(type) ?? []) fn(ev);
    }

    open() {
      this.dispatch('open', {});
    }

    emit(type, data, lastEventId = '') {
      this.dispatch(type, { data: JSON.stringify(data), lastEventId });
    }

    error(code) {
      this.dispatch('error', code === undefined ? {} : { code });
    }
  }
  return FakeEventSource;
}

/** A sessionStorage stand-in. */
export class MemoryStorage {
  constructor() {
    this.map = new Map();
  }

  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }

  setItem(k, v) {
    this.map.set(k, String(v));
  }

  removeItem(k) {
    this.map.delete(k);
  }
}

/** A window stand-in: an EventTarget with navigator.onLine. */
export function fakeWindow() {
  const target = new EventTarget();
  target.navigator = { onLine: true };
  return target;
}

export function fakeDocument() {
  const target = new EventTarget();
  target.visibilityState = 'visible';
  return target;
}

/** A fetch stand-in answering every request with `status` (or throwing when status is null). */
export function fakeFetch(status = 202) {
  const calls = [];
  const f = async (url, init) => {
    calls.push({ url: String(url), init });
    const s = typeof status === 'function' ? status(String(url), init) : status;
    if (s === null) throw new TypeError('fetch failed');
    return new Response(s === 202 ? null : '{}', { status: s });
  };
  f.calls = calls;
  return f;
}
