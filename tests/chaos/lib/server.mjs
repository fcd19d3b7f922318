// One Herald node for a chaos scenario: a fixed loopback port kept across restarts, a persistent data
// directory, a TOML configuration written by the scenario, SIGKILL and SIGSTOP/SIGCONT, readiness by
// GET /healthz with a deadline, samples of RSS, open files and threads from /proc, and a failure when
// any run of the node printed a `panicked` line.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, heraldBinary } from '../../support/herald-process.mjs';
import { SECRET } from './tokens.mjs';

const READY_MS = 30_000;
const LOG_LIMIT = 256 * 1024;

export { freePort, heraldBinary };

/** TOML for a chaos node: `chaos:*` channels keep every message of a run, plus `extra` lines. */
export function chaosConfig(extra = '') {
  return [
    'history_max_messages = 100',
    'history_max_age = "2m"',
    extra,
    '[[history]]',
    'topics = "chaos:*"',
    'max_messages = 1000000',
    'max_age = "3h"',
    '',
  ].join('\n');
}

export class HeraldNode {
  /** `config`: TOML text; `env`: extra environment. Call start(). */
  constructor({ label = 'chaos', config = chaosConfig(), env = {} } = {}) {
    this.label = label;
    this.config = config;
    this.env = env;
    this.child = null;
    this.exited = null;
    this.output = '';
    this.panics = [];
    this.starts = 0;
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.child?.pid;
  }

  async start() {
    const bin = heraldBinary();
    if (!existsSync(bin)) throw new Error(`no Herald binary at ${bin}: build it (cargo build -p herald) or set HERALD_BIN`);
    if (!this.dir) {
      this.dir = await mkdtemp(join(tmpdir(), `herald-${this.label}-`));
      this.dataDir = join(this.dir, 'data');
      this.configPath = join(this.dir, 'herald.toml');
      await writeFile(this.configPath, this.config);
      this.port = await freePort();
    }
    const args = ['serve', '--port', String(this.port), '--bind', '127.0.0.1', '--data-dir', this.dataDir, '--config', this.configPath];
    const child = spawn(bin, args, {
      env: { ...process.env, HERALD_JWT_SECRET: SECRET, HERALD_LOG: 'warn', ...this.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.exited = null;
    this.starts += 1;
    const capture = (chunk) => {
      const text = chunk.toString();
      for (const line of text.split('\n')) if (line.includes('panicked')) this.panics.push(line);
      this.output = (this.output + text).slice(-LOG_LIMIT);
    };
    child.stdout.on('data', capture);
    child.stderr.on('data', capture);
    this.exit = new Promise((r) =>
      child.on('exit', (code, signal) => {
        this.exited = { code, signal };
        r(this.exited);
      }),
    );
    const deadline = Date.now() + READY_MS;
    for (;;) {
      if (this.exited) throw new Error(`herald exited at start (${JSON.stringify(this.exited)}):\n${this.output.slice(-4000)}`);
      try {
        const res = await fetch(`${this.httpUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) return this;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`herald did not answer /healthz within ${READY_MS} ms:\n${this.output.slice(-4000)}`);
      // Readiness probe interval while the process starts.
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** SIGKILL; resolves once the process is gone (the data directory stays). */
  async kill9() {
    if (this.child && !this.exited) this.child.kill('SIGKILL');
    await this.exit;
  }

  signal(sig) {
    if (this.child && !this.exited) this.child.kill(sig);
  }

  /** GET /healthz, resolving { ms, json } or throwing. */
  async healthz(timeoutMs = 10_000) {
    const t0 = performance.now();
    const res = await fetch(`${this.httpUrl}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
    const json = await res.json();
    return { ms: performance.now() - t0, json };
  }

  async metrics() {
    const res = await fetch(`${this.httpUrl}/metrics`, { signal: AbortSignal.timeout(10_000) });
    return res.text();
  }

  /** The value of one Prometheus sample (`name{labels}` exactly as printed), 0 when absent. */
  async metric(sample) {
    const text = await this.metrics();
    const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
    return line ? Number(line.trim().split(/\s+/).pop()) : 0;
  }

  /** { rssKiB, fds, sockets, threads } of the running process, read from /proc. */
  sample() {
    const pid = this.pid;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+)`, 'm'))?.[1] ?? NaN);
    const fds = readdirSync(`/proc/${pid}/fd`);
    let sockets = 0;
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) sockets += 1;
      } catch {
        // closed meanwhile
      }
    }
    return { rssKiB: field('VmRSS'), threads: field('Threads'), fds: fds.length, sockets };
  }

  /** SIGTERM (SIGKILL after 10 s), removes the directory, and throws if any run panicked. */
  async stop() {
    if (this.child && !this.exited) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
      await this.exit;
      clearTimeout(timer);
    }
    if (this.dir && !process.env.CHAOS_KEEP) await rm(this.dir, { recursive: true, force: true });
    if (this.panics.length) throw new Error(`herald (${this.label}) panicked: ${this.panics[0]}\n${this.output.slice(-4000)}`);
  }
}
