// Scenario 4, slow consumers: WebSocket clients that stop reading (a paused socket, and the SDK
// behind a proxy that stops forwarding) and SSE readers that stop reading, under a load of large
// broadcasts. Each must be closed once its queue (outbound_queue_frames) overflows, and its socket
// released; RSS must stay within the queue bound; publishers' acks and healthy subscribers must
// carry on untouched; the SDK reader, once the proxy flows again, recovers every message.
import http from 'node:http';
import WebSocket from 'ws';
import { httpPublisher, loadLoop, sdkPublisher, sdkSubscriber } from '../lib/clients.mjs';
import { Ledger, accountTable, table } from '../lib/ledger.mjs';
import { startProxy } from '../lib/proxy.mjs';
import { chaosConfig, HeraldNode } from '../lib/server.mjs';
import { mib, percentile, round, sampler } from '../lib/stats.mjs';
import { anonToken } from '../lib/tokens.mjs';
import { waitUntil, withDeadline } from '../lib/wait.mjs';

export const name = 'slow';

const QUEUE_FRAMES = 1024; // outbound_queue_frames, the default (docs/configuration.md)

export function params(short) {
  return {
    wsReaders: Number(process.env.CHAOS_SLOW_WS ?? (short ? 2 : 10)),
    sseReaders: Number(process.env.CHAOS_SLOW_SSE ?? (short ? 2 : 10)),
    proxied: Number(process.env.CHAOS_SLOW_PROXIED ?? (short ? 1 : 2)),
    payloadBytes: 16 * 1024,
    rate: 80, // per publisher, two publishers
    baselineMs: short ? 2000 : 10_000,
    reasonReaders: short ? 1 : 3,
    rounds: Number(process.env.CHAOS_SLOW_ROUNDS ?? (short ? 2 : 4)),
  };
}

/** A bare Phoenix 2.0.0 client joined to `topic`; pause() stops reading its socket. */
async function pausedWs(node, topic) {
  const ws = new WebSocket(`${node.wsUrl}/socket/websocket?apikey=${anonToken()}&vsn=2.0.0`);
  const out = { ws, closed: null, frames: 0 };
  ws.on('close', (code, reason) => {
    out.closed = { code, reason: reason.toString() };
  });
  ws.on('error', () => {});
  await withDeadline(new Promise((r) => ws.once('open', r)), 10_000, 'a raw WebSocket to open');
  const joined = new Promise((r) => {
    ws.on('message', (data) => {
      out.frames += 1;
      const text = data.toString();
      if (text.includes('phx_reply') && text.includes('"ok"')) r();
    });
  });
  ws.send(JSON.stringify(['1', '1', `realtime:${topic}`, 'phx_join', { config: { broadcast: { self: false } } }]));
  await withDeadline(joined, 10_000, 'a raw WebSocket join');
  ws.pause();
  return out;
}

/** A bare SSE request on `topic` that stops reading once the stream is ready. */
async function pausedSse(node, topic) {
  const out = { res: null, ended: false };
  await withDeadline(
    new Promise((resolve, reject) => {
      const req = http.get(`${node.httpUrl}/sse?topic=${encodeURIComponent(topic)}&apikey=${anonToken()}`, (res) => {
        out.res = res;
        let head = '';
        const onData = (chunk) => {
          head += chunk.toString();
          if (head.includes('event: ready')) {
            res.off('data', onData);
            res.pause();
            resolve();
          }
        };
        res.on('data', onData);
        res.on('close', () => {
          out.ended = true;
        });
        res.on('error', () => {});
      });
      req.on('error', reject);
    }),
    10_000,
    'an SSE stream to be ready',
  );
  return out;
}

export async function run(short) {
  const p = params(short);
  const failures = [];
  // The large broadcasts go to a channel without history, so that RSS measures the connections and not
  // the store; small ones go to a channel with history, which the stalled SDK readers recover.
  const config = chaosConfig(['[[history]]', 'topics = "chaos:slow-bulk"', 'max_messages = 0', ''].join('\n'));
  const node = new HeraldNode({ label: 'slow', config, env: { HERALD_MAX_CONNECTIONS_PER_IP: '0', HERALD_OUTBOUND_QUEUE_FRAMES: String(QUEUE_FRAMES) } });
  await node.start();
  const ledger = new Ledger();
  const topic = 'chaos:slow-bulk';
  const kept = 'chaos:slow-kept';
  const healthy = [0, 1].map((i) => sdkSubscriber(ledger, `healthy-${i}`, node.httpUrl, [topic, kept], { kind: 'healthy SDK, direct' }));
  const proxies = [];
  const proxiedReaders = [];
  for (let i = 0; i < p.proxied; i++) {
    const proxy = await startProxy(() => node.port);
    proxies.push(proxy);
    proxiedReaders.push(sdkSubscriber(ledger, `stalled-sdk-${i}`, `http://127.0.0.1:${proxy.port}`, [kept], { kind: 'SDK behind a stalled proxy (recovers after)', heartbeatMs: 30_000, unaccounted: [topic] }));
  }
  await withDeadline(Promise.all([...healthy, ...proxiedReaders].map((s) => s.ready())), 30_000, 'subscribers joined');
  const pub = sdkPublisher(node.httpUrl, [topic]);
  await withDeadline(pub.ready(), 30_000, 'the publisher joined');
  const smp = sampler(node, 250);
  const sdkLoad = loadLoop(ledger, 'sdk', pub, [topic], { ratePerSec: p.rate, payloadBytes: p.payloadBytes, inflight: 32 });
  const httpLoad = loadLoop(ledger, 'http', httpPublisher(() => node.httpUrl), [topic], { ratePerSec: p.rate, payloadBytes: p.payloadBytes, inflight: 32 });
  const keptLoad = loadLoop(ledger, 'kept', httpPublisher(() => node.httpUrl), [kept], { ratePerSec: 20 });
  // Baseline: the load alone, before any reader stops.
  const base0 = ledger.counts().accepted;
  await waitUntil(() => ledger.counts().accepted >= base0 + (p.rate * p.baselineMs) / 1000, 60_000, 'the baseline load');
  const baseLat = [...sdkLoad.latencies, ...httpLoad.latencies];
  const baseRss = Math.max(...smp.samples.map((x) => x.rssKiB));
  const baseSockets = node.sample().sockets;
  const slowBefore = await node.metric('herald_errors_total{reason="slow_consumer"}');

  // Rounds: every slow reader stops at once; the node must close each one and release its socket.
  // Repeated, so that memory a closed reader held must be reused rather than added to.
  const expected = p.wsReaders + p.sseReaders + p.proxied;
  const rounds = [];
  const wsCodes = {};
  let during = [];
  for (let round = 0; round < p.rounds; round++) {
    const t0 = Date.now();
    const from = smp.samples.length;
    const latFrom = [sdkLoad.latencies.length, httpLoad.latencies.length];
    const before = await node.metric('herald_errors_total{reason="slow_consumer"}');
    const wsReaders = await Promise.all(Array.from({ length: p.wsReaders }, () => pausedWs(node, topic)));
    const sseReaders = await Promise.all(Array.from({ length: p.sseReaders }, () => pausedSse(node, topic)));
    const reconnectsBefore = proxiedReaders.map((r) => r.acc.reconnects);
    for (const proxy of proxies) for (const c of proxy.live()) c.stall(10 * 60_000);
    const r = { round: round + 1, closedS: NaN, releasedS: NaN };
    try {
      await waitUntil(
        async () => (await node.metric('herald_errors_total{reason="slow_consumer"}')) - before >= expected,
        120_000,
        `${expected} slow consumers closed by the node (round ${round + 1})`,
        100,
      );
      r.closedS = (Date.now() - t0) / 1000;
      // Closed means released: the node's sockets go back to what it held before, while the readers stay stopped.
      await waitUntil(() => node.sample().sockets <= baseSockets, 60_000, () => `the node's sockets back to ${baseSockets} (now ${node.sample().sockets})`, 100);
      r.releasedS = (Date.now() - t0) / 1000;
    } catch (err) {
      failures.push(err.message);
    }
    during = during.concat(sdkLoad.latencies.slice(latFrom[0]), httpLoad.latencies.slice(latFrom[1]));
    // Readers resume: the WebSocket ones must see their end, the SSE ones an ended stream, the SDK reconnects.
    for (const x of wsReaders) x.ws.resume();
    for (const x of sseReaders) x.res.resume();
    for (const proxy of proxies) for (const c of proxy.live()) c.unstall();
    try {
      await waitUntil(() => wsReaders.every((x) => x.closed) && sseReaders.every((x) => x.ended), 30_000, 'every stopped reader to see its end');
      await waitUntil(() => proxiedReaders.every((x, i) => x.acc.reconnects > reconnectsBefore[i]), 60_000, 'the stalled SDK readers to reconnect');
    } catch (err) {
      failures.push(err.message);
    }
    for (const x of wsReaders) wsCodes[x.closed?.code ?? 'open'] = (wsCodes[x.closed?.code ?? 'open'] ?? 0) + 1;
    // A reader that stays stopped cannot read a close frame queued behind what its TCP window holds: the
    // node gives the frame CLOSE_WRITE_TIMEOUT (2 s) and drops the connection (1006 at the client).
    if (wsReaders.some((x) => x.closed?.code !== 4008 && x.closed?.code !== 1006)) failures.push(`stopped WebSocket readers ended with ${JSON.stringify(wsCodes)} (expected 4008, or 1006 once the close frame could not be written)`);
    for (const x of wsReaders) x.ws.terminate();
    for (const x of sseReaders) x.res.destroy();
    r.peakKiB = Math.max(...smp.samples.slice(from).map((x) => x.rssKiB));
    r.endKiB = node.sample().rssKiB;
    rounds.push(r);
  }

  // Close reason: a reader stops until the node closes it, then reads on at once; it must read 4008.
  const reasonCodes = [];
  for (let i = 0; i < p.reasonReaders; i++) {
    try {
      const before = await node.metric('herald_errors_total{reason="slow_consumer"}');
      const r = await pausedWs(node, topic);
      await waitUntil(async () => (await node.metric('herald_errors_total{reason="slow_consumer"}')) > before, 120_000, 'the node to close a stopped reader', 50);
      r.ws.resume();
      await waitUntil(() => r.closed, 30_000, 'the resumed reader to read its close');
      reasonCodes.push(r.closed);
      if (r.closed.code !== 4008) failures.push(`a reader that resumed right after its close read ${r.closed.code} "${r.closed.reason}" (expected 4008)`);
    } catch (err) {
      failures.push(err.message);
    }
  }
  const reason = reasonCodes.find((c) => c.code === 4008)?.reason ?? '';

  const after0 = ledger.counts().accepted;
  await waitUntil(() => ledger.counts().accepted >= after0 + p.rate, 60_000, 'load after the readers were closed').catch((e) => failures.push(e.message));
  await Promise.all([sdkLoad.stop(), httpLoad.stop(), keptLoad.stop()]);
  try {
    await waitUntil(() => ledger.complete(), 60_000, () => `every subscriber to hold every accepted message (${ledger.account().total.lost} missing)`);
  } catch (err) {
    failures.push(err.message);
  }
  const samples = smp.stop();
  const peakRss = Math.max(...samples.map((s) => s.rssKiB));
  const acc = ledger.account();
  for (const s of [...healthy, ...proxiedReaders]) acc.rows.find((r) => r.name === s.acc.name).redelivered += s.sdkDuplicatesDropped();
  const slowAfter = await node.metric('herald_errors_total{reason="slow_consumer"}');
  for (const s of [...healthy, ...proxiedReaders]) s.close();
  await pub.close();
  for (const proxy of proxies) await proxy.close();
  await node.stop().catch((e) => failures.push(e.message));

  // The bound: each slow reader's queue holds at most outbound_queue_frames frames of one broadcast each.
  const frameKiB = (p.payloadBytes + 300) / 1024;
  const boundMiB = (expected * QUEUE_FRAMES * frameKiB) / 1024;
  const growthMiB = mib(peakRss - baseRss);
  if (growthMiB > boundMiB + 64) failures.push(`RSS grew ${round(growthMiB)} MiB with ${expected} slow readers (bound ${round(boundMiB)} MiB + 64 MiB slack)`);
  // Bounded, not leaking: later rounds reuse what the first one took.
  const firstPeak = rounds[0]?.peakKiB ?? NaN;
  const lastPeak = rounds.at(-1)?.peakKiB ?? NaN;
  if (rounds.length > 1 && mib(lastPeak - firstPeak) > boundMiB / 2 + 16) failures.push(`RSS peak rose from ${round(mib(firstPeak))} MiB (round 1) to ${round(mib(lastPeak))} MiB (round ${rounds.length})`);
  if (acc.total.lost) failures.push(`${acc.total.lost} accepted deliveries lost`);
  if (acc.total.duplicated) failures.push(`${acc.total.duplicated} duplicates delivered`);
  if (acc.total.recoveredFalse) failures.push(`${acc.total.recoveredFalse} recovered:false notices`);
  const unacked = acc.sent.unacked + acc.sent.refused;
  if (unacked) failures.push(`${unacked} publishes not acknowledged while readers were slow`);
  const healthyReconnects = acc.rows.filter((r) => r.kind.startsWith('healthy')).reduce((a, r) => a + r.reconnects, 0);
  if (healthyReconnects) failures.push(`healthy subscribers reconnected ${healthyReconnects} times`);
  const stalledRecovered = proxiedReaders.filter((s) => s.acc.reconnects > 0).length;
  if (stalledRecovered !== p.proxied) failures.push(`${p.proxied - stalledRecovered} stalled SDK readers did not reconnect after their close`);

  const lat = (xs) => `${round(percentile(xs, 50), 1)} / ${round(percentile(xs, 99), 1)} / ${round(Math.max(...xs), 1)} ms`;
  const figures = [
    { what: 'slow readers', value: `${expected}: ${p.wsReaders} paused WebSockets, ${p.sseReaders} paused SSE streams, ${p.proxied} SDK behind a stalled proxy` },
    { what: 'load', value: `2 publishers × ${p.rate}/s of ${p.payloadBytes / 1024} KiB payloads (SDK with ack, HTTP) on a channel without history; 20/s small ones (HTTP) on a channel with history` },
    { what: 'rounds (all readers stop at once)', value: `${rounds.length}` },
    { what: 'closed as slow consumers (node counter)', value: `${slowAfter - slowBefore} of ${expected * rounds.length + p.reasonReaders}` },
    ...rounds.map((r) => ({ what: `round ${r.round}: all closed / sockets released after; RSS peak / at the end`, value: `${round(r.closedS, 1)} s / ${round(r.releasedS, 1)} s; ${round(mib(r.peakKiB))} / ${round(mib(r.endKiB))} MiB` })),
    { what: 'stopped WebSocket readers, resumed after every slow reader was closed, saw close code', value: JSON.stringify(wsCodes) },
    { what: 'readers resumed as soon as the node closed them saw', value: `${reasonCodes.map((c) => c.code).join(', ')}${reason ? ` ("${reason}")` : ''}` },
    { what: 'SDK behind the stalled proxy: why it reconnected; recovered:false on the channel without history (expected)', value: `${proxiedReaders.map((s) => s.acc.closeReasons.join('; ')).join(' | ')}; ${proxiedReaders.reduce((a, s) => a + s.acc.expectedReloads, 0)}` },
    { what: 'queue bound', value: `outbound_queue_frames = ${QUEUE_FRAMES} frames per connection: ${round((QUEUE_FRAMES * frameKiB) / 1024)} MiB per reader at most, ${round(boundMiB)} MiB for all` },
    { what: 'RSS with the load alone / peak (growth)', value: `${round(mib(baseRss))} / ${round(mib(peakRss))} MiB (+${round(growthMiB)} MiB)` },
    { what: 'publish ack latency p50 / p99 / max, before', value: lat(baseLat) },
    { what: 'publish ack latency p50 / p99 / max, while readers were slow', value: lat(during) },
    { what: 'publishes accepted / unacked / refused', value: `${acc.sent.accepted} / ${acc.sent.unacked} / ${acc.sent.refused}` },
  ];
  const md = [table(figures, [['what', 'figure'], ['value', 'value']]), '', accountTable(acc)].join('\n');
  return { name, md, failures, data: { figures, acc } };
}
