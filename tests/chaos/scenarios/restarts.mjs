// Scenario 1, restarts: a node on a persistent data directory is killed with SIGKILL and started
// again on the same port, N times, while the SDK, realtime-js and HTTP publish with acks and the
// SDK (WebSocket and SSE), realtime-js (recover config) and bare EventSource subscribers reconnect
// and recover. Every accepted message must reach every subscriber exactly once.
import { httpPublisher, loadLoop, rtjsPublisher, rtjsSubscriber, sdkPublisher, sdkSubscriber, sseSubscriber } from '../lib/clients.mjs';
import { Ledger, accountTable, table } from '../lib/ledger.mjs';
import { HeraldNode } from '../lib/server.mjs';
import { percentile, round } from '../lib/stats.mjs';
import { waitUntil, withDeadline } from '../lib/wait.mjs';

export const name = 'restarts';

export function params(short) {
  return {
    restarts: Number(process.env.CHAOS_RESTARTS ?? (short ? 3 : 20)),
    perRestart: short ? 15 : 40, // accepted messages between two kills
    rate: 15, // per publisher
  };
}

export async function run(short) {
  const p = params(short);
  const failures = [];
  const node = new HeraldNode({ label: 'restarts', env: { HERALD_MAX_CONNECTIONS_PER_IP: '0' } });
  await node.start();
  const ledger = new Ledger();
  const topics = ['chaos:restart-0', 'chaos:restart-1'];
  const subs = [];
  for (let i = 0; i < 3; i++) subs.push(sdkSubscriber(ledger, `sdk-ws-${i}`, node.httpUrl, topics));
  for (let i = 0; i < 2; i++) subs.push(sdkSubscriber(ledger, `sdk-sse-${i}`, node.httpUrl, topics, { transport: 'sse' }));
  for (let i = 0; i < 2; i++) subs.push(rtjsSubscriber(ledger, `rtjs-${i}`, node.wsUrl, topics[i % 2]));
  for (let i = 0; i < 2; i++) subs.push(sseSubscriber(ledger, `es-${i}`, node.httpUrl, topics));
  await withDeadline(Promise.all(subs.map((s) => s.ready())), 30_000, 'every subscriber joined');
  const sdkPub = sdkPublisher(node.httpUrl, topics);
  const rtPub = rtjsPublisher(node.wsUrl, topics);
  await withDeadline(Promise.all([sdkPub.ready(), rtPub.ready()]), 30_000, 'the publishers joined');
  const loads = [
    loadLoop(ledger, 'sdk', sdkPub, topics, { ratePerSec: p.rate }),
    loadLoop(ledger, 'rtjs', rtPub, topics, { ratePerSec: p.rate }),
    loadLoop(ledger, 'http', httpPublisher(() => node.httpUrl), topics, { ratePerSec: p.rate }),
  ];
  const downMs = [];
  const recoverMs = [];
  try {
    for (let i = 0; i < p.restarts; i++) {
      const before = ledger.counts().accepted;
      await waitUntil(() => ledger.counts().accepted >= before + p.perRestart, 60_000, `${p.perRestart} accepted messages before kill ${i + 1}`);
      const reconnectsBefore = subs.map((s) => s.acc.reconnects);
      const t0 = Date.now();
      await node.kill9();
      await node.start();
      const up = Date.now();
      downMs.push(up - t0);
      await waitUntil(
        () => subs.every((s, j) => s.acc.reconnects > reconnectsBefore[j]),
        60_000,
        () => `every subscriber to reconnect after kill ${i + 1} (waiting for ${subs.filter((s, j) => s.acc.reconnects <= reconnectsBefore[j]).map((s) => s.acc.name).join(', ')})`,
      );
      recoverMs.push(Date.now() - up);
    }
    const before = ledger.counts().accepted;
    await waitUntil(() => ledger.counts().accepted >= before + p.perRestart, 60_000, 'accepted messages after the last restart');
  } catch (err) {
    failures.push(err.message);
  }
  await Promise.all(loads.map((l) => l.stop()));
  try {
    await waitUntil(() => ledger.complete(), 60_000, () => `every subscriber to hold every accepted message (${ledger.account().total.lost} missing)`);
  } catch (err) {
    failures.push(err.message);
  }
  const acc = ledger.account();
  for (const s of subs) if (s.sdkDuplicatesDropped) acc.rows.find((r) => r.name === s.acc.name).redelivered += s.sdkDuplicatesDropped();
  for (const s of subs) await s.close();
  await Promise.all([sdkPub.close(), rtPub.close()]);
  await node.stop().catch((e) => failures.push(e.message));

  if (acc.total.lost) failures.push(`${acc.total.lost} accepted deliveries lost`);
  if (acc.total.duplicated) failures.push(`${acc.total.duplicated} duplicates delivered after de-duplication by position`);
  if (acc.total.recoveredFalse) failures.push(`${acc.total.recoveredFalse} recovered:false notices (retention was not exceeded)`);
  if (acc.total.outOfOrder) failures.push(`${acc.total.outOfOrder} deliveries out of order`);
  if (acc.unacked.some) failures.push(`${acc.unacked.some} unacknowledged messages reached some recovering subscribers but not others`);

  const byVia = ['sdk', 'rtjs', 'http'].map((via) => ({ via, ...ledger.counts((s) => s.via === via) }));
  const figures = [
    { what: 'SIGKILL restarts', value: `${downMs.length}` },
    { what: 'kill to /healthz answering, median / max', value: `${round(percentile(downMs, 50), 0)} / ${round(Math.max(...downMs), 0)} ms` },
    { what: 'node up to every subscriber reconnected, median / max', value: `${round(percentile(recoverMs, 50), 0)} / ${round(Math.max(...recoverMs), 0)} ms` },
    {
      what: 'bare EventSource resumes: by its own reconnect (Last-Event-ID) / by a new EventSource (?last_event_id=, after it gave up)',
      value: `${subs.reduce((a, s) => a + (s.acc.lastEventIdResumes ?? 0), 0)} / ${subs.reduce((a, s) => a + (s.acc.queryResumes ?? 0), 0)}`,
    },
    { what: 'unacked (in flight at a kill): delivered to all / none / some', value: `${acc.unacked.total}: ${acc.unacked.all} / ${acc.unacked.none} / ${acc.unacked.some}` },
  ];
  const md = [
    table(byVia.map((r) => ({ ...r, via: { sdk: 'SDK over WebSocket (ack)', rtjs: 'realtime-js (ack)', http: 'HTTP POST /api/broadcast (202, retried with its key)' }[r.via] })), [
      ['via', 'publisher'],
      ['accepted', 'accepted'],
      ['unacked', 'unacked'],
      ['refused', 'refused'],
    ]),
    '',
    accountTable(acc),
    '',
    table(figures, [['what', 'figure'], ['value', 'value']]),
  ].join('\n');
  return { name, md, failures, data: { figures, acc, byVia, downMs, recoverMs } };
}
