// The fault proxy: a loopback TCP proxy (node:net) whose connections can be cut (both sockets
// destroyed), stalled (nothing forwarded towards the client, so the server's writes back up through
// TCP), delayed (added latency), throttled (bytes per second towards the client) or made half-open
// (nothing forwarded either way, no FIN, no RST: a dead path). One proxy fronts one client, so every
// connection it holds belongs to that client.
import { connect, createServer } from 'node:net';

const HIGH_WATER = 256 * 1024; // bytes queued in the proxy before it stops reading the source
const LOW_WATER = 64 * 1024;

/** One direction of a proxied connection: a queue drained with the connection's faults applied. */
class Pipe {
  constructor(conn, from, to, downstream) {
    this.conn = conn;
    this.from = from;
    this.to = to;
    this.downstream = downstream; // towards the client: where stalls and throttling apply
    this.queue = [];
    this.bytes = 0;
    this.ended = false;
    this.timer = null;
    this.waitingDrain = false;
    this.nextFree = 0;
    from.on('data', (chunk) => {
      if (conn.dead || conn.halfOpen) return; // a dead path carries nothing
      this.queue.push({ chunk, at: Date.now() });
      this.bytes += chunk.length;
      if (this.bytes > HIGH_WATER) from.pause();
      this.pump();
    });
    from.on('end', () => {
      this.ended = true;
      this.pump();
    });
  }

  later(ms) {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(1, ms));
  }

  pump() {
    const conn = this.conn;
    if (this.timer || this.waitingDrain || conn.dead || conn.halfOpen) return;
    for (;;) {
      const now = Date.now();
      if (!this.queue.length) break;
      if (this.downstream && conn.stalledUntil > now) return this.later(conn.stalledUntil - now);
      const head = this.queue[0];
      const due = head.at + conn.latencyMs;
      if (due > now) return this.later(due - now);
      let chunk = head.chunk;
      if (this.downstream && conn.rateBps > 0) {
        if (this.nextFree > now) return this.later(this.nextFree - now);
        const slice = Math.max(512, Math.floor(conn.rateBps / 20));
        if (chunk.length > slice) {
          head.chunk = chunk.subarray(slice);
          chunk = chunk.subarray(0, slice);
        } else {
          this.queue.shift();
        }
        this.nextFree = Math.max(now, this.nextFree) + (chunk.length * 1000) / conn.rateBps;
      } else {
        this.queue.shift();
      }
      this.bytes -= chunk.length;
      if (this.to.destroyed) return;
      if (!this.to.write(chunk)) {
        this.waitingDrain = true;
        this.to.once('drain', () => {
          this.waitingDrain = false;
          this.pump();
        });
        return;
      }
    }
    if (this.bytes < LOW_WATER && this.from.isPaused()) this.from.resume();
    if (this.ended && !this.queue.length && !this.to.destroyed) this.to.end();
  }
}

/**
 * Listens on a free loopback port and forwards to 127.0.0.1:`targetPort` (read through
 * `target()` at each connection, so the proxy survives a server restart on the same port).
 */
export async function startProxy(target, { latencyMs = 0, rateBps = 0 } = {}) {
  const targetPort = typeof target === 'function' ? target : () => target;
  const conns = new Set();
  const proxy = {
    latencyMs,
    rateBps,
    accepted: 0,
    port: 0,
    /** Connections still open on both sides. */
    live: () => [...conns].filter((c) => !c.dead && !c.halfOpen),
    close: null,
  };
  const server = createServer((client) => {
    proxy.accepted += 1;
    const upstream = connect(targetPort(), '127.0.0.1');
    const conn = {
      client,
      upstream,
      dead: false,
      halfOpen: false,
      stalledUntil: 0,
      latencyMs: proxy.latencyMs,
      rateBps: proxy.rateBps,
      openedAt: Date.now(),
      /** Both sockets destroyed: each peer sees the connection end. */
      cut() {
        conn.dead = true;
        client.destroy();
        upstream.destroy();
      },
      /** Nothing forwarded either way from now on; the sockets stay open (no FIN, no RST). */
      makeHalfOpen() {
        conn.halfOpen = true;
        client.pause();
        upstream.pause();
      },
      /** Nothing forwarded towards the client for `ms`. */
      stall(ms) {
        conn.stalledUntil = Date.now() + ms;
      },
      unstall() {
        conn.stalledUntil = 0;
        clearTimeout(down.timer);
        down.timer = null;
        down.pump();
      },
    };
    conns.add(conn);
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on('error', () => {});
    }
    const up = new Pipe(conn, client, upstream, false);
    const down = new Pipe(conn, upstream, client, true);
    conn.pipes = [up, down];
    const gone = () => {
      if (conn.halfOpen) return; // a dead path passes no close on
      conn.dead = true;
      client.destroy();
      upstream.destroy();
      conns.delete(conn);
    };
    client.on('close', gone);
    upstream.on('close', gone);
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', ok);
  });
  proxy.port = server.address().port;
  proxy.close = async () => {
    for (const c of conns) c.cut();
    conns.clear();
    if (server.listening) await new Promise((r) => server.close(() => r()));
  };
  return proxy;
}
