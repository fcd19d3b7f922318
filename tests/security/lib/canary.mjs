// The canary: an ordinary user of a server under attack. A WebSocket client joins `realtime:canary`
// with `self: true` and once a second pushes a numbered broadcast; a service_role publisher POSTs one
// to /api/broadcast in the same second. Both must come back to the client. Every message is tracked
// from its send to its arrival: a case passes only if none is missing afterwards, and the largest
// latency is reported.
import { http } from './net.mjs';
import { Phx } from './phoenix.mjs';
import { token } from './tokens.mjs';
import { waitFor } from '../../support/wait.mjs';

const TOPIC = 'realtime:canary';
const PERIOD_MS = 1000;
const SETTLE_MS = 5000;

export class Canary {
  constructor(server, name) {
    this.server = server;
    this.name = name;
    this.seq = 0;
    this.sent = new Map(); // key -> sent at
    this.received = new Map(); // key -> latency ms
    this.problems = []; // { at, text }
    this.timer = null;
    this.socket = null;
  }

  async connect() {
    const phx = await Phx.open(this.server, token(this.server.secret, { role: 'anon', extra: this.server.claims }));
    phx.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let v;
      try {
        v = JSON.parse(data.toString('utf8'));
      } catch {
        return;
      }
      const [, , topic, event, payload] = v;
      if (topic !== TOPIC || event !== 'broadcast') return;
      const key = `${payload?.event}:${payload?.payload?.seq}`;
      const at = this.sent.get(key);
      if (at !== undefined && !this.received.has(key)) this.received.set(key, Date.now() - at);
    });
    phx.ws.on('close', (code) => {
      if (this.stopped) return;
      this.problems.push({ at: Date.now(), text: `canary socket closed (${code})` });
      this.socket = null;
      // Reconnect, so that later cases are measured again; this one has already failed.
      this.connect().catch((e) => this.problems.push({ at: Date.now(), text: `canary reconnect failed: ${e.message}` }));
    });
    const reply = await phx.join(TOPIC, { broadcast: { self: true, ack: false } });
    if (reply?.status !== 'ok') throw new Error(`canary join refused: ${JSON.stringify(reply)}`);
    this.socket = phx;
  }

  async start() {
    this.publisherToken = token(this.server.secret, { role: 'service_role', extra: this.server.claims });
    await this.connect();
    this.tick();
    this.timer = setInterval(() => this.tick(), PERIOD_MS);
  }

  tick() {
    this.seq += 1;
    const seq = this.seq;
    const at = Date.now();
    if (this.socket?.open) {
      this.sent.set(`ws:${seq}`, at);
      this.socket.broadcast(TOPIC, 'ws', { seq });
      // Keeps the socket alive on servers with a short idle timeout, as a real client does.
      if (seq % 10 === 0) this.socket.send('phoenix', 'heartbeat', {});
    } else {
      this.problems.push({ at, text: `canary socket not open at tick ${seq}` });
    }
    this.sent.set(`http:${seq}`, at);
    http(this.server, '/api/broadcast', {
      method: 'POST',
      headers: { authorization: `Bearer ${this.publisherToken}` },
      json: { messages: [{ topic: 'canary', event: 'http', payload: { seq } }] },
      ms: 5000,
    })
      .then((res) => {
        if (res.status !== 202) this.problems.push({ at, text: `canary publish ${seq}: HTTP ${res.status} ${res.text}` });
      })
      .catch((e) => this.problems.push({ at, text: `canary publish ${seq}: ${e.message}` }));
  }

  /** Marks the start of a measurement window. */
  mark() {
    return { since: Date.now(), problems: this.problems.length };
  }

  /**
   * Waits (up to 5 s) for every message sent since `mark` to arrive. Resolves
   * { missed: [keys], maxLatency, problems: [text] } for the window.
   */
  async settle(mark) {
    const keys = () => [...this.sent.entries()].filter(([, at]) => at >= mark.since - PERIOD_MS).map(([k]) => k);
    const until = Date.now();
    try {
      await waitFor(
        () => keys().every((k) => this.received.has(k) || this.sent.get(k) > until),
        SETTLE_MS,
        'canary messages',
      );
    } catch {
      // Reported as missed below.
    }
    const window = keys().filter((k) => this.sent.get(k) <= until);
    const missed = window.filter((k) => !this.received.has(k));
    const latencies = window.filter((k) => this.received.has(k)).map((k) => this.received.get(k));
    const problems = this.problems.slice(mark.problems).map((p) => p.text);
    return { missed, maxLatency: latencies.length ? Math.max(...latencies) : null, problems, count: window.length };
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    this.socket?.close();
  }
}
