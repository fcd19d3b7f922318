// Runs a Herald server process for a test suite: a free loopback port, a temporary data directory
// (or a given one, for a restart on it), the given secret and settings, readiness through GET
// /healthz (with a deadline), SIGTERM on stop (SIGKILL after 5 s), SIGKILL on kill9() (the data
// directory stays), and a failure of stop() or kill9() when the server's log has a `panicked` line.
// HERALD_BIN overrides the binary (default: target/debug/herald). Shared by
// tests/compat, clients/js and tests/e2e, which add their own helpers on top.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const READY_MS = 20_000;
const STOP_MS = 5_000;
const LOG_LIMIT = 64 * 1024;

/** The binary the tests run. */
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
 * Spawns Herald with `env` (HERALD_JWT_SECRET = `secret`) and `args` after `serve`'s own flags, and
 * resolves once it answers /healthz.
 * `dataDir` reuses an existing data directory (which stop() then leaves to its owner); by default
 * a new temporary one is made and stop() removes it.
 * Returns { pid, port, httpUrl, dataDir, logs(), stop(), kill9() }.
 */
export async function spawnHerald({ secret, env = {}, label = 'herald', dataDir: existingDataDir, args = [] }) {
  const bin = heraldBinary();
  if (!existsSync(bin)) {
    throw new Error(`Herald binary not found at ${bin}: run \`cargo build -p herald\` or set HERALD_BIN`);
  }
  const port = await freePort();
  const ownsDataDir = !existingDataDir;
  const dataDir = existingDataDir ?? (await mkdtemp(join(tmpdir(), `${label}-`)));
  let output = '';
  const child = spawn(bin, ['serve', '--port', String(port), '--bind', '127.0.0.1', '--data-dir', dataDir, ...args], {
    env: { ...process.env, HERALD_JWT_SECRET: secret, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // A panic is never an accepted outcome, whatever the test asserts: stop() and kill9() fail on one.
  let panicLine = null;
  const capture = (chunk) => {
    const text = chunk.toString();
    if (!panicLine) panicLine = text.split('\n').find((line) => line.includes('panicked')) ?? null;
    output = (output + text).slice(-LOG_LIMIT);
  };
  const noPanic = () => {
    if (panicLine) throw new Error(`herald (${label}) panicked: ${panicLine}\n${output}`);
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
    pid: child.pid,
    port,
    httpUrl,
    dataDir,
    logs: () => output,
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_MS);
        await exit;
        clearTimeout(timer);
      }
      if (ownsDataDir) await rm(dataDir, { recursive: true, force: true });
      noPanic();
    },
    /** SIGKILL (no shutdown at all); resolves once the process is gone and keeps the data directory. */
    async kill9() {
      if (!exited) child.kill('SIGKILL');
      await exit;
      noPanic();
    },
  };
  const deadline = Date.now() + READY_MS;
  for (;;) {
    if (exited) {
      await server.stop();
      throw new Error(`herald exited early (${JSON.stringify(exited)}):\n${output}`);
    }
    try {
      const res = await fetch(`${httpUrl}/healthz`);
      await res.arrayBuffer();
      if (res.status === 200) return server;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`herald did not answer GET /healthz on port ${port} within ${READY_MS} ms:\n${output}`);
    }
    // Poll interval while waiting for the server to listen (a readiness probe, not synchronisation).
    await new Promise((r) => setTimeout(r, 25));
  }
}
