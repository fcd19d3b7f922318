// Starts a Herald server process for one test file: free port, temp data dir, JWT secret,
// readiness via GET /healthz, SIGTERM on stop. HERALD_BIN overrides the binary's path.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SECRET } from './tokens.mjs';
import { waitFor } from './wait.mjs';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const READY_MS = 20_000;
const STOP_MS = 5_000;
const LOG_LIMIT = 64 * 1024;

/** Settings every test file runs with unless it overrides them. */
export const DEFAULT_ENV = {
  HERALD_MAX_PAYLOAD_BYTES: '262144',
  HERALD_IDLE_TIMEOUT_SECS: '60',
  HERALD_MAX_CHANNELS_PER_CONNECTION: '100',
  HERALD_MAX_JOINS_PER_SECOND: '100',
  HERALD_MAX_MESSAGES_PER_SECOND: '1000',
  HERALD_MAX_CONNECTIONS: '10000',
};

export function heraldBinary() {
  return process.env.HERALD_BIN || join(REPO_ROOT, 'target', 'debug', 'herald');
}

/** Asks the OS for a free loopback port. */
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

/**
 * Spawns Herald and resolves once /healthz answers 200.
 * Returns { port, httpUrl, wsEndpoint(path), secret, logs(), stop() }.
 */
export async function startHerald({ env = {} } = {}) {
  const bin = heraldBinary();
  if (!existsSync(bin)) {
    throw new Error(`Herald binary not found at ${bin}: run \`cargo build -p herald\` or set HERALD_BIN`);
  }
  const port = await freePort();
  const dataDir = await mkdtemp(join(tmpdir(), 'herald-compat-'));
  let output = '';
  const child = spawn(
    bin,
    ['serve', '--port', String(port), '--bind', '127.0.0.1', '--data-dir', dataDir],
    {
      env: { ...process.env, ...DEFAULT_ENV, HERALD_JWT_SECRET: SECRET, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
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
    secret: SECRET,
    /** WebSocket endpoint for realtime-js (it appends /websocket itself). */
    wsEndpoint: (path = '/socket') => `ws://127.0.0.1:${port}${path}`,
    logs: () => output,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_MS);
        await exit;
        clearTimeout(timer);
      }
      await rm(dataDir, { recursive: true, force: true });
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
      READY_MS,
      () => `herald to answer GET /healthz on port ${port}; output so far:\n${output}`,
    );
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}
