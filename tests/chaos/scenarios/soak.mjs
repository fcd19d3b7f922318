// Scenario 5, soak: a steady mixed load for a set time (broadcast through the SDK and HTTP to SDK
// and SSE subscribers, presence churn, SSE streams that resume by cursor, history reads) while the
// node's RSS, open files and threads are sampled; reports the slope after warm-up and the exact
// account of the broadcasts.
import { Herald } from '../../../clients/js/herald.js';
import { httpPublisher, loadLoop, sdkOptions, sdkPublisher, sdkSubscriber, sseSubscriber } from '../lib/clients.mjs';
import { Ledger, accountTable, table } from '../lib/ledger.mjs';
import { chaosConfig, HeraldNode } from '../lib/server.mjs';
import { mib, round, sampler, slope } from '../lib/stats.mjs';
import { serviceToken } from '../lib/tokens.mjs';
import { pace, waitUntil, withDeadline } from '../lib/wait.mjs';

export const name = 'soak';

export function params(short) {
  const minutes = Number(process.env.CHAOS_SOAK_MINUTES ?? (short ? 0.4 : 60));
  return {
    durationMs: minutes * 60_000,
    sampleMs: Number(process.env.CHAOS_SOAK_SAMPLE_SECONDS ?? (short ? 2 : 60)) * 1000,
    warmupMs: short ? minutes * 20_000 : Number(process.env.CHAOS_SOAK_WARMUP_MINUTES ?? 30) * 60_000,
    topics: 4,
    sdkSubscribers: short ? 4 : 10,
    sseSubscribers: short ? 2 : 4,
    // Per publisher, three publishers: fast enough that the store's four 16 MiB memtables reach their
    // flush size within the warm-up, so that the slope after it measures the rest of the process.
    rate: short ? 10 : 40,
    presenceEveryMs: short ? 500 : 1000,
    presenceStayMs: short ? 2000 : 8000,
    sseReopenEveryMs: short ? 5000 : 30_000,
    historyEveryMs: 1000,
  };
}

export async function run(short) {
  const p = params(short);
  const failures = [];
  const node = new HeraldNode({
    label: 'soak',
    config: chaosConfig(['[[history]]', 'topics = "chaos:soak-*"', 'max_messages = 1000', 'max_age = "5m"', ''].join('\n')),
    env: { HERALD_MAX_CONNECTIONS_PER_IP: '0' },
  });
  await node.start();
  const ledger = new Ledger();
  const topics = Array.from({ length: p.topics }, (_, i) => `chaos:soak-${i}`);
  const subs = [];
  for (let i = 0; i < p.sdkSubscribers; i++) subs.push(sdkSubscriber(ledger, `sdk-${i}`, node.httpUrl, [topics[i % topics.length], topics[(i + 1) % topics.length]]));
  for (let i = 0; i < p.sseSubscribers; i++) subs.push(sseSubscriber(ledger, `sse-${i}`, node.httpUrl, topics));
  await withDeadline(Promise.all(subs.map((s) => s.ready())), 30_000, 'soak subscribers ready');
  const pubA = sdkPublisher(node.httpUrl, topics);
  const pubB = sdkPublisher(node.httpUrl, topics);
  await withDeadline(Promise.all([pubA.ready(), pubB.ready()]), 30_000, 'soak publishers joined');
  const http = httpPublisher(() => node.httpUrl);
  const loads = [
    loadLoop(ledger, 'sdk-a', pubA, topics, { ratePerSec: p.rate, payloadBytes: 200 }),
    loadLoop(ledger, 'sdk-b', pubB, topics, { ratePerSec: p.rate, payloadBytes: 200 }),
    loadLoop(ledger, 'http', http, topics, { ratePerSec: p.rate, payloadBytes: 200 }),
  ];

  // Presence churn: an observer, and members that join, track, and leave again.
  const observer = new Herald(node.httpUrl, sdkOptions());
  const room = observer.channel('chaos:presence-room', { presence: { key: 'observer' } });
  room.on('presence', 'sync', () => {});
  room.subscribe();
  await withDeadline(room.ready(), 30_000, 'the presence observer joined');
  await withDeadline(room.track({ observer: true }), 30_000, 'the presence observer tracked');
  const churn = { joined: 0, left: 0, failed: 0 };
  const members = new Set();
  let stopping = false;
  const churnLoop = (async () => {
    let n = 0;
    while (!stopping) {
      n += 1;
      const key = `member-${n}`;
      const m = new Herald(node.httpUrl, sdkOptions());
      members.add(m);
      const ch = m.channel('chaos:presence-room', { presence: { key } });
      ch.subscribe();
      (async () => {
        try {
          await ch.ready();
          await ch.track({ n });
          churn.joined += 1;
          await pace(p.presenceStayMs);
          churn.left += 1;
        } catch {
          churn.failed += 1;
        } finally {
          m.disconnect();
          members.delete(m);
        }
      })();
      await pace(p.presenceEveryMs);
    }
  })();

  // SSE streams closed and reopened from their cursor, one at a time.
  const sseSubs = subs.filter((s) => s.acc.kind.startsWith('EventSource'));
  const reopen = { count: 0 };
  const sseLoop = (async () => {
    let i = 0;
    while (!stopping) {
      await pace(p.sseReopenEveryMs);
      if (stopping) break;
      const s = sseSubs[i++ % sseSubs.length];
      s.reopen?.();
      reopen.count += 1;
    }
  })();

  // History reads.
  const hist = { ok: 0, failed: 0 };
  const tok = serviceToken();
  const histLoop = (async () => {
    let i = 0;
    while (!stopping) {
      try {
        const res = await fetch(`${node.httpUrl}/api/channels/${encodeURIComponent(topics[i++ % topics.length])}/history?limit=50`, {
          headers: { authorization: `Bearer ${tok}` },
          signal: AbortSignal.timeout(5000),
        });
        const body = await res.json();
        if (res.status === 200 && Array.isArray(body.messages)) hist.ok += 1;
        else hist.failed += 1;
      } catch {
        hist.failed += 1;
      }
      await pace(p.historyEveryMs);
    }
  })();

  const smp = sampler(node, p.sampleMs, { healthz: true });
  const started = Date.now();
  const progress = setInterval(() => {
    const last = smp.samples.at(-1);
    if (!short && last) {
      console.log(`soak: ${round((Date.now() - started) / 60_000)} min, rss ${round(mib(last.rssKiB))} MiB, fds ${last.fds}, threads ${last.threads}, connections ${last.connections}, sent ${ledger.sent.size}`);
    }
  }, p.sampleMs);
  // The soak's length is the measurement itself.
  await pace(p.durationMs);
  clearInterval(progress);
  const samples = smp.stop();
  stopping = true;
  await Promise.all(loads.map((l) => l.stop()));
  await Promise.all([churnLoop, sseLoop, histLoop]);
  const ranMs = Date.now() - started;

  // Every accepted message must reach every subscriber; presence must drain to the observer alone.
  try {
    await waitUntil(() => ledger.complete(), 30_000, 'every soak subscriber to hold every accepted message');
  } catch (err) {
    failures.push(err.message);
  }
  try {
    await waitUntil(() => members.size === 0, 30_000, 'presence churners to leave');
    await waitUntil(() => Object.keys(room.presenceState()).join() === 'observer', 30_000, () => `presence to drain to the observer (have ${Object.keys(room.presenceState()).length} keys)`);
  } catch (err) {
    failures.push(err.message);
  }
  const acc = ledger.account();
  for (const s of subs) if (s.sdkDuplicatesDropped) acc.rows.find((r) => r.name === s.acc.name).redelivered += s.sdkDuplicatesDropped();
  for (const s of subs) s.close();
  await Promise.all([pubA.close(), pubB.close()]);
  observer.disconnect();
  await node.stop().catch((e) => failures.push(e.message));

  if (acc.total.lost) failures.push(`${acc.total.lost} accepted messages lost`);
  if (acc.total.duplicated) failures.push(`${acc.total.duplicated} duplicates delivered`);
  if (acc.total.recoveredFalse) failures.push(`${acc.total.recoveredFalse} recovered:false notices (retention was not exceeded)`);
  if (hist.failed) failures.push(`${hist.failed} history reads failed`);
  if (churn.failed) failures.push(`${churn.failed} presence churn cycles failed`);

  const warm = samples.filter((s) => s.t >= p.warmupMs);
  const hours = (xs) => xs.map((s) => s.t / 3_600_000);
  const rssSlope = slope(hours(warm), warm.map((s) => mib(s.rssKiB)));
  const fdSlope = slope(hours(warm), warm.map((s) => s.fds));
  const thrSlope = slope(hours(warm), warm.map((s) => s.threads));
  // Slopes over later windows too, so that a store still filling its memtables shows as such.
  const windows = [];
  if (!short) {
    for (const fromMin of [10, 20, 30, 40]) {
      const w = samples.filter((s) => s.t >= fromMin * 60_000);
      if (w.length >= 5) windows.push(`from minute ${fromMin}: ${round(slope(hours(w), w.map((s) => mib(s.rssKiB))), 2)}`);
    }
  }
  // The store's memtables fill and flush in a sawtooth; the lowest RSS of each 10-minute window (just
  // after a flush) shows what stays.
  const troughs = [];
  if (!short) {
    for (let w = 0; w * 600_000 < ranMs; w++) {
      const ws = samples.filter((s) => s.t >= w * 600_000 && s.t < (w + 1) * 600_000);
      if (ws.length) troughs.push(`${w * 10}-${w * 10 + 10}: ${round(mib(Math.min(...ws.map((s) => s.rssKiB))))}/${round(mib(Math.max(...ws.map((s) => s.rssKiB))))}`);
    }
  }
  const first = samples[0];
  const last = samples.at(-1);
  const peak = Math.max(...samples.map((s) => s.rssKiB));
  const figures = [
    { what: 'ran', value: `${round(ranMs / 60_000, 2)} min (${samples.length} samples, every ${p.sampleMs / 1000} s; slope over the ${warm.length} after ${round(p.warmupMs / 60_000, 2)} min of warm-up)` },
    { what: 'RSS first / last / peak', value: `${round(mib(first.rssKiB))} / ${round(mib(last.rssKiB))} / ${round(mib(peak))} MiB` },
    { what: 'RSS slope after warm-up', value: `${round(rssSlope, 2)} MiB/hour (${short ? 'not judged: a short run is all warm-up' : 'goal < 1'})${windows.length ? `; ${windows.join(', ')} MiB/hour` : ''}` },
    ...(troughs.length ? [{ what: 'RSS lowest / highest per 10 minutes (MiB)', value: troughs.join(', ') }] : []),
    { what: 'open files first / last, slope', value: `${first.fds} / ${last.fds}, ${round(fdSlope, 2)}/hour (sockets ${first.sockets} / ${last.sockets}; the rest are the store's files)` },
    { what: 'threads first / last, slope', value: `${first.threads} / ${last.threads}, ${round(thrSlope, 2)}/hour` },
    { what: 'connections (healthz) first / last', value: `${first.connections} / ${last.connections}` },
    { what: 'broadcasts attempted / accepted / unacked / refused', value: `${ledger.sent.size} / ${acc.sent.accepted} / ${acc.sent.unacked} / ${acc.sent.refused}` },
    { what: 'presence churn: joined+tracked / left / failed', value: `${churn.joined} / ${churn.left} / ${churn.failed}` },
    { what: 'SSE streams reopened from their cursor', value: `${reopen.count}` },
    { what: 'history reads ok / failed', value: `${hist.ok} / ${hist.failed}` },
  ];
  if (!short && !(rssSlope < 1)) failures.push(`RSS slope ${round(rssSlope, 2)} MiB/hour after warm-up (goal < 1)`);
  const sampleRows = samples.map((s) => ({ min: round(s.t / 60_000, 2), rss: round(mib(s.rssKiB)), fds: s.fds, sockets: s.sockets, threads: s.threads, conns: s.connections, hz: round(s.healthzMs, 1) }));
  const md = [
    table(figures, [['what', 'figure'], ['value', 'value']]),
    '',
    accountTable(acc),
    '',
    '<details><summary>samples</summary>',
    '',
    table(sampleRows, [['min', 'minute'], ['rss', 'RSS MiB'], ['fds', 'open files'], ['sockets', 'sockets'], ['threads', 'threads'], ['conns', 'connections'], ['hz', '/healthz ms']]),
    '',
    '</details>',
  ].join('\n');
  return { name, md, failures, data: { figures, acc, samples } };
}
