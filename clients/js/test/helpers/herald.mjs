// Starts a Herald server process for one test file: free port, temporary data directory, the test
// JWT secret, readiness through GET /healthz, SIGTERM on stop. HERALD_BIN overrides the binary.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SECRET, serviceToken } from './tokens.mjs';
import { waitFor } from './wait.mjs';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
const LOG_LIMIT = 64 * 1024;

export const DEFAULT_ENV = {
  HERALD_IDLE_TIMEOUT_SECS: '60',
  HERALD_MAX_JOINS_PER_SECOND: '100',
  HERALD_MAX_MESSAGES_PER_SECOND: '1000',
  HERALD_PRESENCE_BATCH_MS: '10',
};

export function heraldBinary() {
  return process.env.HERALD_BIN || join(REPO_ROOT, 'target', 'debug', 'herald');
}

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/** Spawns Herald; resolves { port, httpUrl, logs(), stop(), publish(), get() } once it answers. */
export async function startHerald({ env = {} } = {}) {
  const bin = heraldBinary();
  if (!existsSync(bin)) {
    throw new Error(`Herald binary not found at ${bin}: run \`cargo build -p herald\` or set HERALD_BIN`);
  }
  const port = await freePort();
  const dataDir = await mkdtemp(join(tmpdir(), 'herald-js-'));
  let output = '';
  const child = spawn(bin, ['serve', '--port', String(port), '--bind', '127.0.0.1', '--data-dir', dataDir], {
    env: { ...process.env, ...DEFAULT_ENV, HERALD_JWT_SECRET: SECRET, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const capture = (chunk) => {
    output = (output + chunk.toString()).slice(-LOG_LIMIT);
  };
  child.stdout.on('data', capture);
  child.stderr.on('data', capture);
  let exited = null;
  const exit = new Promise((r) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      r(exited);
    });
  });
  const httpUrl = `http://127.0.0.1:${port}`;
  const server = {
    port,
    httpUrl,
    logs: () => output,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exit;
        clearTimeout(timer);
      }
      await rm(dataDir, { recursive: true, force: true });
    },
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
  try {
    await waitFor(
      async () => {
        if (exited) throw new Error(`herald exited early (${JSON.stringify(exited)}):\n${output}`);
        try {
          const res = await fetch(`${httpUrl}/healthz`);
          await res.arrayBuffer();
          return res.status === 200;
        } catch {
          return false;
        }
      },
      20_000,
      () => `herald to answer GET /healthz on port ${port}; output so far:\n${output}`,
    );
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}
