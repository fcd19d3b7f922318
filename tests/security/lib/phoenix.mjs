// A bare Phoenix-channel client on the `ws` package: joins, pushes and replies by ref, every frame
// received kept for assertions, the close code and reason, and handshake refusals with their status
// and body. Speaks vsn 2.0.0 (arrays) and 1.0.0 (objects).
import WebSocket from 'ws';
import { waitFor } from '../../support/wait.mjs';

/** Thrown when the server refuses the upgrade: carries `status` and `body`. */
export class HandshakeRefused extends Error {
  constructor(status, body) {
    super(`handshake refused: HTTP ${status} ${body}`);
    this.status = status;
    this.body = body;
  }
}

/** The WebSocket URL of `server` for `token`. */
export function wsUrl(server, token, vsn = '2.0.0', path = '/realtime/v1/websocket') {
  const q = [token === undefined ? null : `apikey=${encodeURIComponent(token)}`, vsn === null ? null : `vsn=${vsn}`]
    .filter(Boolean)
    .join('&');
  return `ws://127.0.0.1:${server.port}${path}${q ? `?${q}` : ''}`;
}

export class Phx {
  /**
   * Opens a socket. Rejects with HandshakeRefused (status, body) when the server answers the
   * upgrade with an HTTP error, or with an Error on a network failure or after `ms`.
   */
  static async open(server, token, { vsn = '2.0.0', localAddress, headers = {}, ms = 5000, path } = {}) {
    const ws = new WebSocket(wsUrl(server, token, vsn, path), {
      localAddress,
      headers,
      perMessageDeflate: false,
      maxPayload: 64 * 1024 * 1024,
      handshakeTimeout: ms,
    });
    const phx = new Phx(ws, vsn);
    await waitFor(
      new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
        ws.once('unexpected-response', (req, res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => {
            req.destroy();
            reject(new HandshakeRefused(res.statusCode, Buffer.concat(chunks).toString('utf8')));
          });
        });
      }),
      ms,
      `WebSocket open to port ${server.port}`,
    );
    return phx;
  }

  /** Opens a socket expecting a refusal; resolves { status, body } (or { opened: true }). */
  static async refusal(server, token, opts = {}) {
    try {
      const phx = await Phx.open(server, token, opts);
      phx.close();
      return { opened: true };
    } catch (e) {
      if (e instanceof HandshakeRefused) return { opened: false, status: e.status, body: e.body };
      throw e;
    }
  }

  constructor(ws, vsn) {
    this.ws = ws;
    this.vsn = vsn;
    this.frames = [];
    this.ref = 0;
    this.closed = null;
    this.closedPromise = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closed = { code, reason: reason.toString(), at: Date.now() };
        resolve(this.closed);
      });
    });
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.frames.push({ binary: Buffer.from(data), at: Date.now() });
        return;
      }
      const text = data.toString('utf8');
      let f;
      try {
        const v = JSON.parse(text);
        f = Array.isArray(v)
          ? { join_ref: v[0], ref: v[1], topic: v[2], event: v[3], payload: v[4] }
          : { join_ref: v.join_ref ?? null, ref: v.ref ?? null, topic: v.topic, event: v.event, payload: v.payload };
      } catch {
        f = { unparsable: text };
      }
      f.at = Date.now();
      this.frames.push(f);
    });
  }

  nextRef() {
    this.ref += 1;
    return String(this.ref);
  }

  /** Sends a raw frame: strings as text, Buffers as binary, anything else as JSON text. */
  sendRaw(data, opts) {
    if (typeof data === 'string' || Buffer.isBuffer(data)) this.ws.send(data, opts);
    else this.ws.send(JSON.stringify(data), opts);
  }

  /** Sends a Phoenix message; returns its ref. */
  send(topic, event, payload, { joinRef = null, ref = this.nextRef() } = {}) {
    if (this.vsn === '1.0.0') this.sendRaw({ topic, event, payload, ref, join_ref: joinRef });
    else this.sendRaw([joinRef, ref, topic, event, payload]);
    return ref;
  }

  /** The reply to `ref`: resolves its payload ({ status, response }). */
  async reply(ref, ms = 5000, label = `reply to ref ${ref}`) {
    const f = await waitFor(
      () => this.frames.find((x) => x.event === 'phx_reply' && x.ref === ref),
      ms,
      () => `${label}; got ${this.describe()}`,
    );
    return f.payload;
  }

  /** Joins `topic` with `config`; resolves the reply payload and remembers the join ref. */
  async join(topic, config = {}, { accessToken, ms = 5000 } = {}) {
    const ref = this.nextRef();
    const payload = { config: { broadcast: { self: false, ack: false }, presence: { enabled: false }, postgres_changes: [], private: false, ...config } };
    if (accessToken) payload.access_token = accessToken;
    this.send(topic, 'phx_join', payload, { joinRef: ref, ref });
    this.joinRefs = { ...(this.joinRefs ?? {}), [topic]: ref };
    return this.reply(ref, ms, `join reply for ${topic}`);
  }

  /** Sends a broadcast push on a joined topic; resolves its ref. */
  broadcast(topic, event, payload, meta) {
    const body = { type: 'broadcast', event, payload };
    if (meta) body.meta = meta;
    return this.send(topic, 'broadcast', body, { joinRef: this.joinRefs?.[topic] ?? null });
  }

  /** A heartbeat round trip: the socket is alive and reading. */
  async heartbeat(ms = 5000) {
    const ref = this.send('phoenix', 'heartbeat', {});
    const r = await this.reply(ref, ms, 'heartbeat reply');
    return r?.status === 'ok';
  }

  /** The first frame matching `pred`, waiting up to `ms`. */
  expect(pred, ms, label) {
    return waitFor(() => this.frames.find(pred), ms, () => `${label}; got ${this.describe()}`);
  }

  /** Waits for the socket to close; resolves { code, reason } or throws after `ms`. */
  waitClose(ms, label = 'socket close') {
    return waitFor(this.closedPromise, ms, () => `${label}; got ${this.describe()}`);
  }

  /** The last frames, for failure messages. */
  describe(n = 4) {
    const shown = this.frames.slice(-n).map((f) => {
      if (f.binary) return `binary(${f.binary.length})`;
      const s = JSON.stringify(f.unparsable ?? [f.join_ref, f.ref, f.topic, f.event, f.payload]);
      return s.length > 200 ? `${s.slice(0, 200)}…` : s;
    });
    return `${this.frames.length} frames [${shown.join(', ')}]${this.closed ? ` closed ${this.closed.code}` : ''}`;
  }

  get open() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.terminate();
  }
}

/** Broadcasts received on `topic` (text frames), as { event, payload, meta }. */
export function broadcastsOn(phx, topic) {
  return phx.frames
    .filter((f) => f.topic === topic && f.event === 'broadcast' && f.payload?.type === 'broadcast')
    .map((f) => f.payload);
}
