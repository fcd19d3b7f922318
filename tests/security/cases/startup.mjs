// Production mode refuses to start on an unsafe configuration: the process exits non-zero, names
// the rule, and never listens.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, heraldBinary } from '../../support/herald-process.mjs';
import { must } from '../lib/check.mjs';
import { http } from '../lib/net.mjs';

const GOOD_SECRET = 'a-production-secret-of-forty-eight-bytes-0123456';

/** Runs `herald serve` with `args` and `env` (no other HERALD_ settings); resolves { code, output, listened }. */
async function serve(args, env) {
  const port = await freePort();
  const dataDir = await mkdtemp(join(tmpdir(), 'herald-security-refusal-'));
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_') && k !== 'DATABASE_URL'));
  const child = spawn(heraldBinary(), ['serve', '--port', String(port), '--bind', '127.0.0.1', '--data-dir', dataDir, ...args], {
    env: { ...clean, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  let listened = false;
  const exit = new Promise((r) => child.on('exit', (code, signal) => r({ code, signal })));
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  // Probes while the process lives: a refusing server never answers.
  const probe = (async () => {
    for (let i = 0; i < 40 && child.exitCode === null; i++) {
      try {
        await http({ port }, '/healthz', { ms: 250 });
        listened = true;
      } catch {
        // Not listening, as it should be.
      }
    }
  })();
  const { code, signal } = await exit;
  clearTimeout(timer);
  await probe;
  await rm(dataDir, { recursive: true, force: true });
  return { code, signal, output, listened };
}

/** The process exits non-zero within 10 s, never listens, and its output contains every text of `names`. */
const refuses = (args, env, names) => async () => {
  const r = await serve(args, env);
  must(r.signal === null, `still running after 10 s (killed; listened: ${r.listened})`);
  must(r.code !== 0, `exit code ${r.code}`);
  must(!r.listened, 'it answered /healthz before exiting');
  const line = r.output.split('\n').find((l) => l.includes(names[0])) ?? r.output.slice(0, 200);
  for (const n of names) must(r.output.includes(n), `exit ${r.code}, output lacks "${n}": ${r.output.slice(0, 300)}`);
  return `exit ${r.code}: ${line.trim().slice(0, 140)}`;
};

export default [
  {
    name: 'production-refuses-short-secret',
    server: 'dev',
    short: true,
    expect: 'herald serve --production with HERALD_JWT_SECRET=a exits non-zero naming jwt_secret and the 32-byte minimum',
    run: refuses(['--production'], { HERALD_JWT_SECRET: 'a', HERALD_METRICS_TOKEN: 'm' }, ['jwt_secret', 'at least 32']),
  },
  {
    name: 'production-refuses-missing-secret',
    server: 'dev',
    expect: 'HERALD_ENV=production without any secret exits non-zero naming jwt_secret',
    run: refuses([], { HERALD_ENV: 'production', HERALD_METRICS_TOKEN: 'm' }, ['jwt_secret', 'needs a secret']),
  },
  {
    name: 'production-refuses-echo-route',
    server: 'dev',
    short: true,
    expect: 'herald serve --production --test-echo-route exits non-zero naming test_echo_route',
    run: refuses(['--production', '--test-echo-route'], { HERALD_JWT_SECRET: GOOD_SECRET, HERALD_METRICS_TOKEN: 'm' }, ['test_echo_route']),
  },
  {
    name: 'production-refuses-open-metrics',
    server: 'dev',
    short: true,
    expect: 'herald serve --production without HERALD_METRICS_TOKEN exits non-zero naming metrics_token',
    run: refuses(['--production'], { HERALD_JWT_SECRET: GOOD_SECRET }, ['metrics_token']),
  },
];
