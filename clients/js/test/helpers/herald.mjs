// Starts a Herald server process for one test file (see tests/support/herald-process.mjs) with the
// test secret, plus HTTP helpers the tests use.
import { freePort, heraldBinary, spawnHerald } from '../../../../tests/support/herald-process.mjs';
import { SECRET, serviceToken } from './tokens.mjs';

export { freePort, heraldBinary };

export const DEFAULT_ENV = {
  HERALD_IDLE_TIMEOUT_SECS: '60',
  HERALD_MAX_JOINS_PER_SECOND: '100',
  HERALD_MAX_MESSAGES_PER_SECOND: '1000',
  HERALD_PRESENCE_BATCH_MS: '10',
};

/** Spawns Herald; resolves { port, httpUrl, logs(), stop(), publish(), get() } once it answers. */
export async function startHerald({ env = {} } = {}) {
  const base = await spawnHerald({ secret: SECRET, env: { ...DEFAULT_ENV, ...env }, label: 'herald-js' });
  const { httpUrl } = base;
  const server = {
    ...base,
    /** POST /api/broadcast with a service token; expects 202. */
    async publish(messages) {
      const res = await fetch(`${httpUrl}/api/broadcast`, {
        method: 'POST',
        headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messages }),
        signal: AbortSignal.timeout(5000),
      });
      const text = await res.text();
      if (res.status !== 202) throw new Error(`POST /api/broadcast: ${res.status} ${text}`);
    },
    /** POST /api/broadcast/<topic>/events/<event> with raw bytes or JSON text. */
    async publishSingle(topic, event, body, contentType) {
      const res = await fetch(`${httpUrl}/api/broadcast/${topic}/events/${event}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': contentType },
        body,
        signal: AbortSignal.timeout(5000),
      });
      const text = await res.text();
      if (res.status !== 202) throw new Error(`POST single: ${res.status} ${text}`);
    },
    /** GET a path with a service token; resolves the parsed JSON. */
    async get(path) {
      const res = await fetch(`${httpUrl}${path}`, {
        headers: { authorization: `Bearer ${serviceToken()}` },
        signal: AbortSignal.timeout(5000),
      });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${text}`);
      return JSON.parse(text);
    },
    /** Subscribers of channel `name` (0 when the channel is not listed). */
    async subscribers(name) {
      const { channels } = await server.get('/api/channels');
      const ch = channels.find((c) => c.topic === name && !c.private);
      return ch ? ch.subscribers : 0;
    },
  };
  return server;
}
