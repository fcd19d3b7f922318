// Scenario 2, drops: random cuts, stalls, half-open paths and latency bursts on client connections
// (each client behind its own fault proxy) during publish load, for the SDK (WebSocket and SSE),
// realtime-js (recover config) and bare EventSource clients, plus clients behind a steady 50 ms
// latency and a 32 KB/s throttle. Clients connected directly must not notice; every recovering
// client must end with every accepted message once; a stalled connection catches up or is closed
// as a slow consumer (4008).
import { httpPublisher, loadLoop, rtjsPublisher, rtjsSubscriber, sdkPublisher, sdkSubscriber, sseSubscriber } from '../lib/clients.mjs';
import { Ledger, accountTable, table } from '../lib/ledger.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { HeraldNode } from '../lib/server.mjs';
import { pace, waitUntil, withDeadline } from '../lib/wait.mjs';

export const name = 'drops';

export function params(short) {
  return {
    faults: Number(process.env.CHAOS_FAULTS ?? (short ? 40 : 1000)),
    everyMs: short ? 150 : 120,
    rate: 15, // per publisher
    heartbeatMs: 2000,
  };
}

const KINDS = [
  ['cut', 40],
  ['stall', 30],
  ['halfOpen', 15],
  ['latency', 15],
];

function pickKind(rand, allowHalfOpen) {
  let r = rand() * 100;
  for (const [k, w] of KINDS) {
    if (r < w) return k === 'halfOpen' && !allowHalfOpen ? 'cut' : k;
    r -= w;
  }
  return 'cut';
}

export async function run(short) {
  const p = params(short);
  const failures = [];
  const node = new HeraldNode({ label: 'drops', env: { HERALD_MAX_CONNECTIONS_PER_IP: '0' } });
  await node.start();
  const ledger = new Ledger();
  const topics = ['chaos:drop-0', 'chaos:drop-1', 'chaos:drop-2'];
  const target = () => node.port;
  const faulty = []; // { client, proxy, halfOpenOk }
  const steady = [];
  const control = [];
  const via = (proxy) => `http://127.0.0.1:${proxy.port}`;
  const wsVia = (proxy) => `ws://127.0.0.1:${proxy.port}`;
  const hb = { heartbeatMs: p.heartbeatMs };
  for (let i = 0; i < 4; i++) {
    const proxy = await startProxy(target);
    faulty.push({ proxy, halfOpenOk: true, client: sdkSubscriber(ledger, `sdk-ws-${i}`, via(proxy), topics, hb) });
  }
  for (let i = 0; i < 2; i++) {
    const proxy = await startProxy(target);
    faulty.push({ proxy, halfOpenOk: false, client: sdkSubscriber(ledger, `sdk-sse-${i}`, via(proxy), topics, { ...hb, transport: 'sse' }) });
  }
  for (let i = 0; i < 3; i++) {
    const proxy = await startProxy(target);
    faulty.push({ proxy, halfOpenOk: true, client: rtjsSubscriber(ledger, `rtjs-${i}`, wsVia(proxy), topics[i % topics.length], hb) });
  }
  for (let i = 0; i < 2; i++) {
    const proxy = await startProxy(target);
    faulty.push({ proxy, halfOpenOk: false, client: sseSubscriber(ledger, `es-${i}`, via(proxy), topics) });
  }
  const latProxy = await startProxy(target, { latencyMs: 50 });
  steady.push({ proxy: latProxy, client: sdkSubscriber(ledger, 'sdk-latency-50ms', via(latProxy), topics, { ...hb, kind: 'SDK behind 50 ms latency' }) });
  const thrProxy = await startProxy(target, { rateBps: 32 * 1024 });
  steady.push({ proxy: thrProxy, client: sdkSubscriber(ledger, 'sdk-throttled-32KBps', via(thrProxy), topics, { ...hb, kind: 'SDK behind 32 KB/s' }) });
  // The control group heartbeats at the SDK's pace for tests (5 s), so that a busy machine cannot pass for a fault.
  for (let i = 0; i < 2; i++) control.push(sdkSubscriber(ledger, `control-sdk-${i}`, node.httpUrl, topics, { kind: 'control: SDK, direct' }));
  control.push(sseSubscriber(ledger, 'control-es', node.httpUrl, topics));
  control.at(-1).acc.kind = 'control: EventSource, direct';
  const all = [...faulty.map((f) => f.client), ...steady.map((s) => s.client), ...control];
  await withDeadline(Promise.all(all.map((c) => c.ready())), 30_000, 'every subscriber joined');

  // Publishers: the SDK behind a faulty proxy too (its sends are retried with their keys), realtime-js and HTTP direct.
  const pubProxy = await startProxy(target);
  const sdkPub = sdkPublisher(via(pubProxy), topics, hb);
  const rtPub = rtjsPublisher(node.wsUrl, topics, hb);
  await withDeadline(Promise.all([sdkPub.ready(), rtPub.ready()]), 30_000, 'the publishers joined');
  const pubAcc = { name: 'sdk-publisher', closeReasons: [] };
  sdkPub.herald.on('state', (s) => {
    if (s.state === 'reconnecting' && s.reason) pubAcc.closeReasons.push(s.reason);
  });
  faulty.push({ proxy: pubProxy, halfOpenOk: true, publisher: true, client: { acc: pubAcc } });
  const loads = [
    loadLoop(ledger, 'sdk', sdkPub, topics, { ratePerSec: p.rate }),
    loadLoop(ledger, 'rtjs', rtPub, topics, { ratePerSec: p.rate }),
    loadLoop(ledger, 'http', httpPublisher(() => node.httpUrl), topics, { ratePerSec: p.rate }),
  ];

  // Faults, from a seeded generator so a failing run can be repeated (CHAOS_SEED).
  let seed = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
  const seedUsed = seed;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const done = { cut: 0, stall: 0, halfOpen: 0, latency: 0 };
  const stalls = { caughtUp: 0, closedSlow: 0, clientTimedOut: 0, closedOther: 0 };
  const stallChecks = [];
  const busy = new Set();
  try {
    for (let n = 0; n < p.faults; ) {
      const f = faulty[Math.floor(rand() * faulty.length)];
      const conn = f.proxy.live().find((c) => !busy.has(c));
      if (!conn) {
        // That client is reconnecting; pace and pick again.
        await pace(20);
        continue;
      }
      n += 1;
      const kind = pickKind(rand, f.halfOpenOk);
      done[kind] += 1;
      if (kind === 'cut') conn.cut();
      else if (kind === 'halfOpen') conn.makeHalfOpen();
      else if (kind === 'latency') {
        busy.add(conn);
        conn.latencyMs = 200 + Math.floor(rand() * 600);
        setTimeout(() => {
          conn.latencyMs = 0;
          busy.delete(conn);
        }, 2000);
      } else {
        busy.add(conn);
        const ms = 200 + Math.floor(rand() * 2800);
        const reasonsBefore = f.client.acc.closeReasons.length;
        conn.stall(ms);
        stallChecks.push(
          (async () => {
            await pace(ms);
            conn.unstall();
            // Caught up: the stalled path has drained its queue and the connection is still open.
            try {
              await waitUntil(() => conn.dead || conn.pipes[1].queue.length === 0, 30_000, 'a stalled connection to drain or close');
            } catch {
              // counted below as closed for another reason
            }
            const reasons = f.client.acc.closeReasons.slice(reasonsBefore);
            if (!conn.dead && conn.pipes[1].queue.length === 0) stalls.caughtUp += 1;
            else if (reasons.some((r) => /4008|slow/.test(r))) stalls.closedSlow += 1;
            else if (reasons.some((r) => /heartbeat/.test(r))) stalls.clientTimedOut += 1;
            else {
              stalls.closedOther += 1;
              stalls.other = [...(stalls.other ?? []), `${f.client.acc.name}: ${reasons.join('; ') || 'no reason seen'}`];
            }
            busy.delete(conn);
          })(),
        );
      }
      // Pacing of fault injection.
      await pace(p.everyMs * (0.5 + rand()));
    }
    await Promise.all(stallChecks);
  } catch (err) {
    failures.push(err.message);
  }
  // Let everyone settle after the last fault, with load still on, then stop the load.
  const before = ledger.counts().accepted;
  try {
    await waitUntil(() => ledger.counts().accepted >= before + 30, 60_000, 'load after the last fault');
  } catch (err) {
    failures.push(err.message);
  }
  await Promise.all(loads.map((l) => l.stop()));
  try {
    await waitUntil(() => ledger.complete(), 90_000, () => `every subscriber to hold every accepted message (${ledger.account().total.lost} missing: ${ledger.account().rows.filter((r) => r.lost).map((r) => `${r.name} ${r.lost}`).join(', ')})`);
  } catch (err) {
    failures.push(err.message);
  }
  const slowClosed = await node.metric('herald_errors_total{reason="slow_consumer"}').catch(() => NaN);
  const acc = ledger.account();
  for (const s of all) if (s.sdkDuplicatesDropped) acc.rows.find((r) => r.name === s.acc.name).redelivered += s.sdkDuplicatesDropped();
  for (const s of all) await s.close();
  await Promise.all([sdkPub.close(), rtPub.close()]);
  for (const f of [...faulty, ...steady]) await f.proxy.close();
  await node.stop().catch((e) => failures.push(e.message));

  if (acc.total.lost) failures.push(`${acc.total.lost} accepted deliveries lost`);
  if (acc.total.duplicated) failures.push(`${acc.total.duplicated} duplicates delivered after de-duplication by position`);
  if (acc.total.recoveredFalse) failures.push(`${acc.total.recoveredFalse} recovered:false notices (retention was not exceeded)`);
  if (acc.total.outOfOrder) failures.push(`${acc.total.outOfOrder} deliveries out of order`);
  const ctl = acc.rows.filter((r) => r.kind.startsWith('control'));
  const ctlReconnects = ctl.reduce((a, r) => a + r.reconnects, 0);
  if (ctlReconnects) failures.push(`clients connected directly reconnected ${ctlReconnects} times (they must not notice)`);
  if (stalls.closedOther) failures.push(`${stalls.closedOther} stalled connections neither caught up nor were closed as slow consumers (${stalls.other.join(' | ')})`);

  const byVia = ['sdk', 'rtjs', 'http'].map((v) => ({ via: { sdk: 'SDK over WebSocket, behind a faulty proxy (ack)', rtjs: 'realtime-js, direct (ack)', http: 'HTTP, direct (202)' }[v], ...ledger.counts((s) => s.via === v) }));
  const figures = [
    { what: 'faults injected', value: `${p.faults}: ${done.cut} cuts, ${done.stall} stalls (0.2-3 s), ${done.halfOpen} half-open paths, ${done.latency} latency bursts (0.2-0.8 s for 2 s); seed ${seedUsed}` },
    { what: 'stalls: caught up / closed by the node as slow consumers (4008) / closed by the client (its heartbeat timed out during the stall) / otherwise', value: `${stalls.caughtUp} / ${stalls.closedSlow} / ${stalls.clientTimedOut} / ${stalls.closedOther}` },
    { what: 'slow_consumer closes counted by the node', value: `${slowClosed}` },
    { what: 'reconnects of clients connected directly', value: `${ctlReconnects}` },
    { what: 'unacked: delivered to all / none / some', value: `${acc.unacked.total}: ${acc.unacked.all} / ${acc.unacked.none} / ${acc.unacked.some}` },
  ];
  const md = [
    table(byVia, [['via', 'publisher'], ['accepted', 'accepted'], ['unacked', 'unacked'], ['refused', 'refused']]),
    '',
    accountTable(acc),
    '',
    table(figures, [['what', 'figure'], ['value', 'value']]),
  ].join('\n');
  return { name, md, failures, data: { figures, acc, byVia, done, stalls } };
}
