// Scenario 3, reconnection storm: thousands of SDK clients (spread over child processes, each from
// its own 127.0.0.x source address) are live on a node that is killed with SIGKILL and started
// again; they all reconnect at once with the SDK's backoff and jitter. Reports the time until every
// client is live and joined again, /healthz latency during the storm and the node's RSS peak, and
// checks that a broadcast then reaches every client.
import { fork } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '../lib/ledger.mjs';
import { HeraldNode } from '../lib/server.mjs';
import { mib, percentile, round } from '../lib/stats.mjs';
import { serviceToken } from '../lib/tokens.mjs';
import { waitUntil } from '../lib/wait.mjs';

export const name = 'storm';
const HERE = dirname(fileURLToPath(import.meta.url));

export function params(short) {
  const clients = Number(process.env.CHAOS_STORM_CLIENTS ?? (short ? 300 : 10_000));
  return { clients, perProcess: short ? 150 : 2000, channels: 100, deadlineMs: short ? 60_000 : 300_000 };
}

export async function run(short) {
  const p = params(short);
  const failures = [];
  const node = new HeraldNode({
    label: 'storm',
    env: { HERALD_MAX_CONNECTIONS_PER_IP: '0', HERALD_MAX_CONNECTIONS: String(Math.max(10_000, p.clients + 1000)) },
  });
  await node.start();
  const nproc = Math.ceil(p.clients / p.perProcess);
  const workers = [];
  for (let i = 0; i < nproc; i++) {
    const w = fork(join(HERE, 'storm-worker.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const state = { joined: 0, rejoined: 0, probed: 0, lastRejoinAt: 0 };
    w.on('message', (m) => Object.assign(state, m));
    workers.push({ w, state });
  }
  const sum = (k) => workers.reduce((a, x) => a + x.state[k], 0);
  let offset = 0;
  workers.forEach(({ w }, i) => {
    const n = Math.min(p.perProcess, p.clients - offset);
    w.send({ cmd: 'start', n, base: node.httpUrl, localAddress: `127.0.0.${10 + i}`, channels: p.channels, offset });
    offset += n;
  });
  const rssSamples = [];
  const healthz = [];
  const hzFailed = [];
  let sampling = true;
  const hzLoop = (async () => {
    while (sampling) {
      const t = Date.now();
      try {
        rssSamples.push({ t, rssKiB: node.sample().rssKiB });
      } catch {
        // between runs
      }
      try {
        const h = await node.healthz(5000);
        healthz.push({ t, ms: h.ms });
      } catch {
        hzFailed.push(t);
      }
      // /healthz probe interval during the storm (a measurement, not synchronisation).
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const t0 = Date.now();
  const figures = [];
  const probe = async () => {
    for (const { w } of workers) w.send({ cmd: 'unprobe' });
    await waitUntil(() => sum('probed') === 0, 10_000, 'probe flags cleared');
    const messages = Array.from({ length: p.channels }, (_, i) => ({ topic: `chaos:storm-${i}`, event: 'probe', payload: {}, private: false }));
    const res = await fetch(`${node.httpUrl}/api/broadcast`, {
      method: 'POST',
      headers: { authorization: `Bearer ${serviceToken()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages }),
    });
    await res.arrayBuffer();
    if (res.status !== 202) throw new Error(`probe publish answered ${res.status}`);
    await waitUntil(() => sum('probed') === p.clients, 60_000, () => `the probe to reach every client (${sum('probed')} of ${p.clients})`, 50);
  };
  let rssBeforeKill = NaN;
  let hzBefore = [];
  try {
    await waitUntil(() => sum('joined') === p.clients, p.deadlineMs, () => `${p.clients} clients joined (${sum('joined')})`, 50);
    const firstMs = Date.now() - t0;
    await probe();
    hzBefore = healthz.map((h) => h.ms);
    rssBeforeKill = node.sample().rssKiB;
    figures.push({ what: 'clients', value: `${p.clients} SDK clients over WebSocket in ${nproc} processes (source addresses 127.0.0.10-${9 + nproc}), ${p.channels} channels; default backoff (500 ms base, 30 s cap, full jitter)` });
    figures.push({ what: 'first connection of all (ramp, not a storm)', value: `${round(firstMs / 1000, 1)} s` });
    for (const { w } of workers) w.send({ cmd: 'mark' });
    await waitUntil(() => workers.every((x) => x.state.markAt > 0), 10_000, 'workers marked');
    const kill = Date.now();
    await node.kill9();
    await node.start();
    const up = Date.now();
    const hzFrom = healthz.length;
    await waitUntil(() => sum('rejoined') === p.clients, p.deadlineMs, () => `${p.clients} clients back after the restart (${sum('rejoined')})`, 50);
    const allBack = Math.max(...workers.map((x) => x.state.lastRejoinAt));
    const stormHz = healthz.slice(hzFrom).filter((h) => h.t <= allBack).map((h) => h.ms);
    const stormRss = rssSamples.filter((s) => s.t >= up && s.t <= allBack + 1000).map((s) => s.rssKiB);
    await probe();
    const after = node.sample().rssKiB;
    figures.push({ what: 'node down (kill to /healthz answering)', value: `${up - kill} ms` });
    figures.push({ what: 'node up to every client live and joined', value: `${round((allBack - up) / 1000, 2)} s` });
    figures.push({ what: '/healthz latency before, p50 / p99 / max', value: `${round(percentile(hzBefore, 50), 1)} / ${round(percentile(hzBefore, 99), 1)} / ${round(Math.max(...hzBefore), 1)} ms` });
    figures.push({ what: '/healthz latency during the storm, p50 / p99 / max', value: `${round(percentile(stormHz, 50), 1)} / ${round(percentile(stormHz, 99), 1)} / ${round(Math.max(...stormHz), 1)} ms (${stormHz.length} probes, ${hzFailed.filter((t) => t >= up && t <= allBack).length} failed)` });
    figures.push({ what: 'node RSS before the kill / peak during the storm / after', value: `${round(mib(rssBeforeKill))} / ${round(mib(Math.max(...stormRss)))} / ${round(mib(after))} MiB` });
    figures.push({ what: 'a broadcast after the storm reached', value: `${sum('probed')} of ${p.clients} clients` });
    const refused = await node.metric('herald_errors_total{reason="too_many_connections"}');
    figures.push({ what: 'handshakes refused (max_connections)', value: `${refused}` });
  } catch (err) {
    failures.push(err.message);
  }
  sampling = false;
  await hzLoop;
  for (const { w } of workers) {
    w.send({ cmd: 'stop' });
  }
  await Promise.all(workers.map(({ w }) => new Promise((r) => (w.exitCode !== null ? r() : w.once('exit', r)))));
  await node.stop().catch((e) => failures.push(e.message));
  const md = table(figures, [['what', 'figure'], ['value', 'value']]);
  return { name, md, failures, data: { figures } };
}
