// Runs the hostile cases against live Herald servers, each while the server's canary keeps
// publishing and receiving, and checks the server's health and memory around each case. Prints a
// table and writes it as markdown to target/security/report.md. Exits non-zero when any case fails,
// a canary missed a message, or a server log has a `panicked` line.
//
//   node run.mjs            every case, one after another
//   node run.mjs --short    the CI subset (the slow head-timeout cases run side by side)
//   node run.mjs --only ws- cases whose name contains the text
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { heraldBinary } from '../support/herald-process.mjs';
import { CASES } from './cases/index.mjs';
import { http } from './lib/net.mjs';
import { rssMb, SERVERS, startServer } from './lib/servers.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const REPORT = join(ROOT, 'target', 'security', 'report.md');
const DEFAULT_CASE_MS = 60_000;

const args = process.argv.slice(2);
const short = args.includes('--short');
const onlyAt = args.indexOf('--only');
const only = onlyAt >= 0 ? args[onlyAt + 1] : null;

function fail(message) {
  console.error(`security suite: ${message}`);
  process.exit(1);
}

if (!existsSync(heraldBinary())) fail(`no Herald binary at ${heraldBinary()} (build it, or set HERALD_BIN)`);
const names = new Set();
for (const c of CASES) {
  if (names.has(c.name)) fail(`two cases are named ${c.name}`);
  names.add(c.name);
  if (!c.name || !c.expect || !SERVERS[c.server] || typeof c.run !== 'function') fail(`case ${c.name} is incomplete`);
}
const selected = CASES.filter((c) => (short ? c.short : true) && (!only || only.split(',').some((o) => c.name.includes(o))));
if (selected.length === 0) fail('no case selected');

const machine = `${execFileSync('uname', ['-a']).toString().trim()}; ${cpus().length} CPUs`;
const started = new Date();
console.log(`Herald security suite (${short ? 'short' : 'full'}): ${selected.length} cases`);
console.log(`machine: ${machine}`);
console.log(`date: ${started.toISOString()}`);
console.log(`binary: ${heraldBinary()}`);

const servers = {};
const needed = [...new Set(['dev', ...selected.map((c) => c.server)])];
try {
  await Promise.all(
    needed.map(async (name) => {
      servers[name] = await startServer(name);
      console.log(`server ${name} (${servers[name].about}) on port ${servers[name].port}, pid ${servers[name].pid}`);
    }),
  );
} catch (e) {
  for (const s of Object.values(servers)) {
    s.canary.stop();
    await s.stop().catch(() => {});
  }
  fail(`could not start the servers: ${e.message}`);
}

function withTimeout(promise, ms, name) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`case did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function healthy(server) {
  try {
    const res = await http(server, '/healthz', { ms: 5000 });
    return res.status === 200 && res.json?.status === 'ok' ? null : `healthz answered ${res.status} ${res.text}`;
  } catch (e) {
    return `healthz: ${e.message}`;
  }
}

/** Runs one case (its canary window and RSS reading starting at `mark`). */
async function runCase(c, { mark, rssBefore }) {
  const srv = servers[c.server];
  const t0 = Date.now();
  let passed = true;
  let seen;
  try {
    seen = await withTimeout(Promise.resolve().then(() => c.run({ srv, servers })), c.timeout ?? DEFAULT_CASE_MS, c.name);
    seen = String(seen ?? 'as expected');
  } catch (e) {
    passed = false;
    seen = e?.message ?? String(e);
  }
  const problems = [];
  const sick = await healthy(srv);
  if (sick) problems.push(sick);
  const canary = await srv.canary.settle(mark);
  if (canary.missed.length) problems.push(`canary missed ${canary.missed.length}/${canary.count} (${canary.missed.slice(0, 4).join(', ')})`);
  problems.push(...canary.problems);
  if (srv.logs().includes('panicked')) problems.push('server log has a `panicked` line');
  if (problems.length) passed = false;
  const row = {
    name: c.name,
    server: c.server,
    expect: c.expect,
    upcoming: c.upcoming,
    passed,
    seen: [seen, ...problems].join('; '),
    rssBefore,
    rssAfter: rssMb(srv.pid),
    latency: canary.maxLatency,
    ms: Date.now() - t0,
  };
  const tag = passed ? 'pass' : 'FAIL';
  console.log(`${tag.padEnd(4)} ${c.name} [${c.server}] (${row.ms} ms): ${row.seen}`);
  if (!passed) console.log(`     expected: ${c.expect}`);
  return row;
}

const rows = [];
const slow = short ? selected.filter((c) => c.slow) : [];
const rest = selected.filter((c) => !slow.includes(c));
if (slow.length) {
  // Cases that wait out a server timeout run side by side in the short run, each on its own
  // connections; their RSS and canary windows are those of the group.
  console.log(`-- ${slow.length} timeout cases side by side`);
  const marks = Object.fromEntries(slow.map((c) => [c.name, { mark: servers[c.server].canary.mark(), rssBefore: rssMb(servers[c.server].pid) }]));
  rows.push(...(await Promise.all(slow.map((c) => runCase(c, marks[c.name])))));
}
for (const c of rest) {
  const srv = servers[c.server];
  rows.push(await runCase(c, { mark: srv.canary.mark(), rssBefore: rssMb(srv.pid) }));
}

// Shut down; a `panicked` line anywhere in a server's output fails the run.
const endProblems = [];
for (const [name, s] of Object.entries(servers)) {
  s.canary.stop();
  const missedAll = [...s.canary.sent.keys()].filter((k) => !s.canary.received.has(k) && s.canary.sent.get(k) < Date.now() - 5000);
  if (missedAll.length) endProblems.push(`canary of ${name} missed ${missedAll.length} messages over the run`);
  try {
    await s.stop();
  } catch (e) {
    endProblems.push(`server ${name}: ${e.message.split('\n')[0]}`);
  }
}

const failed = rows.filter((r) => !r.passed);
const elapsed = Math.round((Date.now() - started.getTime()) / 1000);
const mb = (v) => (v === null || v === undefined ? '?' : v.toFixed(1));
const cell = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ');
const lines = [
  `Machine: \`${machine}\`. Date: ${started.toISOString()}. Run: ${short ? 'short' : 'full'}, ${rows.length} cases, ${elapsed} s; ${rows.length - failed.length} passed, ${failed.length} failed.`,
  '',
  '| # | case | server | expected | outcome | RSS MB before → after | canary max latency ms |',
  '|---|---|---|---|---|---|---|',
  ...rows.map(
    (r, i) =>
      `| ${i + 1} | ${cell(r.name)}${r.upcoming ? ` (feature ${r.upcoming})` : ''} | ${r.server} | ${cell(r.expect)} | ${r.passed ? 'pass' : '**FAIL**'}: ${cell(r.seen)} | ${mb(r.rssBefore)} → ${mb(r.rssAfter)} | ${r.latency ?? '?'} |`,
  ),
];
if (endProblems.length) lines.push('', ...endProblems.map((p) => `- ${p}`));
mkdirSync(dirname(REPORT), { recursive: true });
writeFileSync(REPORT, `${lines.join('\n')}\n`);

console.log('\n');
console.log(`machine: ${machine}`);
console.log(`date: ${started.toISOString()}, ${elapsed} s`);
const w = Math.max(...rows.map((r) => r.name.length));
console.log(`${'case'.padEnd(w)}  ${'outcome'.padEnd(6)}  ${'RSS MB'.padEnd(13)}  canary ms  seen`);
for (const r of rows) {
  const rss = `${mb(r.rssBefore)} → ${mb(r.rssAfter)}`;
  console.log(`${r.name.padEnd(w)}  ${(r.passed ? 'pass' : 'FAIL').padEnd(6)}  ${rss.padEnd(13)}  ${String(r.latency ?? '?').padStart(9)}  ${r.seen}`);
}
for (const p of endProblems) console.log(`FAIL ${p}`);
console.log(`\nreport: ${REPORT}`);
if (failed.length || endProblems.length) {
  console.log(`\n${failed.length} of ${rows.length} cases FAILED${endProblems.length ? `, ${endProblems.length} run problems` : ''}:`);
  for (const r of failed) console.log(`  ${r.name}${r.upcoming ? ` (upcoming: ${r.upcoming})` : ''}: ${r.seen}`);
  process.exit(1);
}
console.log(`all ${rows.length} cases passed`);
process.exit(0);
