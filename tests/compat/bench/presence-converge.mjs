// Measures presence convergence: MEMBERS realtime-js clients (one socket each, vsn 1.0.0 and 2.0.0
// alternating, spread over worker threads) join one channel and track at the same moment; the
// script reports the time until every client's presenceState() holds MEMBERS keys, and the presence
// frames the server sent (herald_presence_frames_total on /metrics). It runs once with the default
// presence batching and once with HERALD_PRESENCE_BATCH_MS=0. Prints, asserts nothing.
//
//   node bench/presence-converge.mjs [members=500] [workers=4]
//
// The times include the clients' own work (realtime-js merges every diff), which shares the
// machine with the server.
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

const MEMBERS = Number(process.argv[2] ?? 500);
const WORKERS = Number(process.argv[3] ?? 4);
const TOPIC = 'bench-presence';
const DEADLINE_MS = 120_000;

if (isMainThread) {
  await main();
} else {
  await worker();
}

async function main() {
  const { startHerald } = await import('../lib/herald.mjs');
  const { anonToken } = await import('../lib/tokens.mjs');
  const { metric } = await import('../lib/http.mjs');
  const { waitFor } = await import('../lib/wait.mjs');

  const runs = [
    { label: 'default batching (50 ms)', env: {} },
    { label: 'HERALD_PRESENCE_BATCH_MS=0', env: { HERALD_PRESENCE_BATCH_MS: '0' } },
  ];
  const results = [];
  for (const run of runs) {
    const server = await startHerald({ env: run.env });
    const workers = [];
    try {
      const perWorker = Math.ceil(MEMBERS / WORKERS);
      for (let w = 0; w < WORKERS; w += 1) {
        const first = w * perWorker;
        const count = Math.max(0, Math.min(perWorker, MEMBERS - first));
        if (count === 0) continue;
        const worker = new Worker(fileURLToPath(import.meta.url), {
          workerData: { endpoint: server.wsEndpoint(), token: anonToken(), first, count, members: MEMBERS },
          argv: process.argv.slice(2),
        });
        const inbox = [];
        worker.on('message', (m) => inbox.push(m));
        worker.on('error', (err) => inbox.push({ type: 'error', message: String(err?.stack ?? err) }));
        workers.push({ worker, inbox });
      }
      const waitAll = (type, ms) =>
        waitFor(
          () => {
            const failed = workers.flatMap((w) => w.inbox).find((m) => m.type === 'error');
            if (failed) throw new Error(`worker failed: ${failed.message}`);
            return workers.every((w) => w.inbox.some((m) => m.type === type));
          },
          ms,
          () => `${type} from every worker`,
        );
      await waitAll('connected', 60_000);
      const framesBefore = (await metric(server, 'herald_presence_frames_total')) ?? 0;
      const diffsBefore = (await metric(server, 'herald_presence_diffs_total')) ?? 0;

      const startedAt = performance.timeOrigin + performance.now();
      for (const w of workers) w.worker.postMessage({ type: 'go', startedAt });
      await waitAll('converged', DEADLINE_MS);
      const reports = workers.map((w) => w.inbox.find((m) => m.type === 'converged'));
      const lastAt = Math.max(...reports.map((r) => r.lastAt));
      const firstAt = Math.min(...reports.map((r) => r.firstAt));
      const tracked = Math.max(...reports.map((r) => r.trackedAt));

      // Let trailing diffs drain, then read the counters once they are stable.
      let frames = -1;
      await waitFor(
        async () => {
          const now = await metric(server, 'herald_presence_frames_total');
          const stable = now === frames;
          frames = now;
          if (!stable) await new Promise((r) => setTimeout(r, 250));
          return stable;
        },
        10_000,
        'herald_presence_frames_total to settle',
      );
      const diffs = (await metric(server, 'herald_presence_diffs_total')) - diffsBefore;
      for (const w of workers) w.worker.postMessage({ type: 'count' });
      await waitAll('counted', 10_000);
      const clientFrames = workers
        .map((w) => w.inbox.find((m) => m.type === 'counted'))
        .reduce((acc, m) => ({ state: acc.state + m.state, diff: acc.diff + m.diff }), { state: 0, diff: 0 });
      results.push({
        run: run.label,
        members: MEMBERS,
        'all tracks acked (ms)': Math.round(tracked - startedAt),
        'first client complete (ms)': Math.round(firstAt - startedAt),
        'all clients complete (ms)': Math.round(lastAt - startedAt),
        'presence frames (server)': frames - framesBefore,
        'presence diffs (server)': diffs,
        'presence_state + presence_diff received (clients)': `${clientFrames.state} + ${clientFrames.diff}`,
      });
      console.log(JSON.stringify(results.at(-1)));
    } finally {
      for (const w of workers) w.worker.postMessage({ type: 'stop' });
      await Promise.all(workers.map((w) => new Promise((r) => (w.worker.threadId === -1 ? r() : w.worker.once('exit', r)))));
      await server.stop();
    }
  }
  console.table(results);
  process.exit(0);
}

async function worker() {
  const { RealtimeClient } = await import('@supabase/realtime-js');
  const { default: WebSocket } = await import('ws');
  const { endpoint, token, first, count, members } = workerData;
  const now = () => performance.timeOrigin + performance.now();
  const counts = { state: 0, diff: 0 };

  // Counts the presence frames this client receives without decoding them twice.
  class CountingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      this.addEventListener('message', (event) => {
        if (typeof event.data !== 'string') return;
        if (event.data.includes('"presence_diff"')) counts.diff += 1;
        else if (event.data.includes('"presence_state"')) counts.state += 1;
      });
    }
  }

  const clients = [];
  for (let i = first; i < first + count; i += 1) {
    const client = new RealtimeClient(endpoint, {
      params: { apikey: token },
      transport: CountingWebSocket,
      vsn: i % 2 === 0 ? '1.0.0' : '2.0.0',
      heartbeatIntervalMs: 25_000,
      timeout: 60_000,
    });
    client.connect();
    clients.push({ i, client, seen: new Set(), completeAt: null });
  }
  const deadline = Date.now() + 60_000;
  while (!clients.every((c) => c.client.isConnected())) {
    if (Date.now() > deadline) throw new Error('sockets did not connect');
    await new Promise((r) => setTimeout(r, 10));
  }
  parentPort.postMessage({ type: 'connected' });

  parentPort.on('message', async (msg) => {
    if (msg.type === 'go') {
      let trackedAt = 0;
      let pending = clients.length;
      const finish = () => {
        const bad = clients.find((c) => Object.keys(c.channel.presenceState()).length !== members);
        if (bad) {
          parentPort.postMessage({ type: 'error', message: `client ${bad.i}: presenceState has ${Object.keys(bad.channel.presenceState()).length} keys` });
          return;
        }
        const times = clients.map((c) => c.completeAt);
        parentPort.postMessage({ type: 'converged', firstAt: Math.min(...times), lastAt: Math.max(...times), trackedAt });
      };
      for (const c of clients) {
        c.channel = c.client.channel(TOPIC, { config: { presence: { key: `m${c.i}` } } });
        c.channel.on('presence', { event: 'join' }, ({ key }) => {
          c.seen.add(key);
          if (c.completeAt === null && c.seen.size === members) {
            c.completeAt = now();
            pending -= 1;
            if (pending === 0) setImmediate(finish);
          }
        });
        c.channel.subscribe(async (status) => {
          if (status !== 'SUBSCRIBED') {
            parentPort.postMessage({ type: 'error', message: `client ${c.i}: ${status}` });
            return;
          }
          const result = await c.channel.track({ i: c.i, online_at: new Date().toISOString() });
          if (result !== 'ok') parentPort.postMessage({ type: 'error', message: `client ${c.i}: track ${result}` });
          trackedAt = Math.max(trackedAt, now());
        });
      }
    } else if (msg.type === 'count') {
      parentPort.postMessage({ type: 'counted', ...counts });
    } else if (msg.type === 'stop') {
      await Promise.all(clients.map((c) => Promise.race([c.client.disconnect(), new Promise((r) => setTimeout(r, 2000))])));
      process.exit(0);
    }
  });
}
