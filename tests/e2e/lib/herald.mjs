// Starts a Herald process for the end-to-end tests: a free loopback port, a temporary data dir, a
// known JWT secret (so tests can mint tokens), readiness via GET /healthz, SIGTERM on stop.
// HERALD_BIN overrides the binary (default: target/debug/herald of this repository).
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const SECRET = 'herald-e2e-suite-secret-0123456789-abcdefghijkl';
const READY_MS = 20_000;
const STOP_MS = 5_000;
const LOG_LIMIT = 64 * 1024;

export function heraldBinary() {
  return process.env.HERALD_BIN ? resolve(process.env.HERALD_BIN) : resolve(HERE, '../../../target/debug/herald');
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

/** An HS256 JWT for `role`, signed with the suite's secret. */
export function mintToken(role = 'anon', ttlSecs = 3600) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ role, exp: now + ttlSecs, iat: now })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/**
 * Spawns Herald (development mode unless `production`) and resolves once /healthz answers 200.
 * Returns { port, origin, logs(), stop() }.
 */
export async function startHerald({ production = false, env = {} } = {}) {
  const bin = heraldBinary();
  if (!existsSync(bin)) throw new Error(`Herald binary not found at ${bin}: run \`cargo build -p herald\` or set HERALD_BIN`);
  const port = await freePort();
  const dataDir = await mkdtemp(join(tmpdir(), 'herald-e2e-'));
  let output = '';
  const child = spawn(bin, ['serve', '--port', String(port), '--bind', '127.0.0.1', '--data-dir', dataDir], {
    env: {
      ...process.env,
      HERALD_JWT_SECRET: SECRET,
      HERALD_MAX_JOINS_PER_SECOND: '100',
      HERALD_IDLE_TIMEOUT_SECS: '60',
      ...(production ? { HERALD_ENV: 'production' } : {}),
      ...env,
    },
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
  const origin = `http://127.0.0.1:${port}`;
  const server = {
    port,
    origin,
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
  const deadline = Date.now() + READY_MS;
  for (;;) {
    if (exited) {
      await server.stop();
      throw new Error(`herald exited early (${JSON.stringify(exited)}):\n${output}`);
    }
    try {
      const res = await fetch(`${origin}/healthz`);
      await res.arrayBuffer();
      if (res.status === 200) return server;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`herald did not answer GET /healthz on port ${port} within ${READY_MS} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}
