// GET /sse from Chromium's native EventSource (headless Debian Chromium driven by playwright-core):
// a stream that dies while the browser is offline (context.setOffline) is resumed by the browser
// itself once it is back online, with every message exactly once and in order; the herald_token
// cookie authenticates a same-origin EventSource that passes no token.
//
// Chromium's offline emulation (what setOffline uses) fails new requests with
// ERR_INTERNET_DISCONNECTED but leaves an already established response stream alone: an open
// EventSource keeps receiving while "offline". So the resume test also breaks the TCP connection,
// through a loopback proxy, at the moment the browser goes offline; the browser's reconnection
// attempts while offline then fail inside the browser, and the one after setOffline(false) resumes.
//
// CHROMIUM_BIN overrides the browser's path (default /usr/bin/chromium). No browser is downloaded.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { uniqueTopic } from './lib/client.mjs';
import { startHerald } from './lib/herald.mjs';
import { publishRange, range, startBreakingProxy } from './lib/sse.mjs';
import { anonToken } from './lib/tokens.mjs';
import { waitFor } from './lib/wait.mjs';

const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** A same-origin document to run EventSource in (not the demo page, which opens a WebSocket). */
const BLANK_PATH = '/healthz';

let server;
let browser;
const contexts = [];
const proxies = [];

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_BIN)`);
  [server, browser] = await Promise.all([
    startHerald(),
    // playwright launches with a fresh temporary profile (--user-data-dir) of its own.
    chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true, timeout: 20_000 }),
  ]);
});

afterEach(async () => {
  await Promise.all(contexts.splice(0).map((c) => c.close().catch(() => {})));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

async function newPage(origin) {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  await page.goto(`${origin}${BLANK_PATH}`, { timeout: 10_000 });
  return { context, page };
}

/**
 * Opens `new EventSource(path)` in `page` as window.sources[name], recording into
 * window.sources[name].log every open, error (with readyState), broadcast and system event.
 */
function openInPage(page, name, path) {
  return page.evaluate(
    ([name, path]) => {
      window.sources ??= {};
      const es = new EventSource(path);
      const log = [];
      window.sources[name] = { es, log };
      es.addEventListener('open', () => log.push({ type: 'open', at: Date.now() }));
      es.addEventListener('error', () => log.push({ type: 'error', readyState: es.readyState, at: Date.now() }));
      for (const type of ['broadcast', 'system']) {
        es.addEventListener(type, (e) => {
          const data = JSON.parse(e.data);
          log.push({ type, data, lastEventId: e.lastEventId, at: Date.now() });
        });
      }
    },
    [name, path],
  );
}

const logOf = (page, name) => page.evaluate((n) => window.sources[n].log, name);
const readyState = (page, name) => page.evaluate((n) => window.sources[n].es.readyState, name);

/** Offsets of the broadcasts on `topic` in `log`, in arrival order (duplicates kept). */
const offsets = (log, topic) => log.filter((e) => e.type === 'broadcast' && e.data.topic === topic).map((e) => e.data.meta.offset);

function describeLog(log, last = 60) {
  return log
    .slice(-last)
    .map((e) => {
      if (e.type === 'broadcast') {
        const m = e.data.meta;
        return `  broadcast ${e.data.topic} n=${e.data.payload.n} offset=${m.offset}${m.replayed ? ' replayed' : ''}`;
      }
      if (e.type === 'error') return `  error (readyState ${e.readyState})`;
      return `  ${e.type}${e.data ? ` ${JSON.stringify(e.data)}` : ''}`;
    })
    .join('\n');
}

/** Polls the page's log until `predicate(log)` holds. */
async function waitForLog(page, name, predicate, ms, what) {
  let log = [];
  try {
    return await waitFor(
      async () => {
        log = await logOf(page, name);
        return predicate(log) ? log : false;
      },
      ms,
      what,
    );
  } catch (err) {
    err.message += `\nEventSource log:\n${describeLog(log)}`;
    throw err;
  }
}

const hasOffset = (topics, offset) => (log) => topics.every((t) => offsets(log, t).includes(offset));

describe('Chromium EventSource', () => {
  test('setOffline(true) then setOffline(false) alone: every message exactly once, in order', async (t) => {
    const topic = uniqueTopic('br-offline');
    const { context, page } = await newPage(server.httpUrl);
    await openInPage(page, 'main', `/sse?topic=${encodeURIComponent(topic)}&apikey=${anonToken()}`);
    await waitForLog(page, 'main', (log) => log.some((e) => e.type === 'open'), 5000, 'the stream to open');
    await publishRange(server, [topic], 1, 3);
    await waitForLog(page, 'main', hasOffset([topic], 3), 5000, 'messages 1..3');

    await context.setOffline(true);
    assert.equal(await page.evaluate(() => navigator.onLine), false, 'navigator.onLine while offline');
    await publishRange(server, [topic], 4, 6);
    // Either the open stream survives offline emulation (message 6 arrives) or the browser drops it
    // (an error event); both are fine, what follows must hold either way.
    const offline = await waitForLog(
      page,
      'main',
      (log) => hasOffset([topic], 6)(log) || log.some((e) => e.type === 'error'),
      8000,
      'message 6 or an error event while offline',
    );
    const dropped = offline.some((e) => e.type === 'error');
    t.diagnostic(
      dropped
        ? 'Chromium dropped the open stream when going offline'
        : 'Chromium kept the open stream while offline (messages 4..6 arrived on it)',
    );
    await context.setOffline(false);
    await publishRange(server, [topic], 7, 8);
    const log = await waitForLog(page, 'main', hasOffset([topic], 8), 10_000, 'messages up to 8');
    assert.deepEqual(offsets(log, topic), range(1, 8), `raw offsets received\n${describeLog(log)}`);
    assert.deepEqual(log.filter((e) => e.type === 'system'), [], `no system events\n${describeLog(log)}`);
  });

  test('a stream broken while offline resumes after setOffline(false): every message exactly once, in order', async () => {
    const topics = [uniqueTopic('br-a'), uniqueTopic('br-b')];
    const proxy = await startBreakingProxy(server.port);
    proxies.push(proxy);
    const origin = `http://127.0.0.1:${proxy.port}`;
    const { context, page } = await newPage(origin);
    const sseRequests = () => proxy.requests().filter((r) => r.path.startsWith('/sse?'));
    const query = `${topics.map((t) => `topic=${encodeURIComponent(t)}`).join('&')}&apikey=${anonToken()}`;
    await openInPage(page, 'main', `/sse?${query}`);
    await waitForLog(page, 'main', (log) => log.some((e) => e.type === 'open'), 5000, 'the stream to open');

    await publishRange(server, topics, 1, 3);
    const before = await waitForLog(page, 'main', hasOffset(topics, 3), 5000, 'messages 1..3');
    const lastSeen = before.at(-1).lastEventId;
    assert.ok(lastSeen, 'broadcasts carry an id');

    await context.setOffline(true);
    assert.equal(await page.evaluate(() => navigator.onLine), false, 'navigator.onLine while offline');
    // The emulated outage: the browser's own connection attempts now fail; the open stream is broken.
    assert.ok(proxy.break() >= 1, 'the stream ran through the proxy');
    await publishRange(server, topics, 4, 6);
    // The first error is the broken stream; each further one is a reconnection attempt failing offline.
    await waitForLog(
      page,
      'main',
      (log) => log.filter((e) => e.type === 'error').length >= 2,
      8000,
      'the stream error and a failed reconnection attempt while offline (retry: 2000)',
    );
    assert.equal(sseRequests().length, 1, 'no reconnection attempt reached the network while offline');
    assert.equal(await readyState(page, 'main'), 0, 'EventSource keeps trying (CONNECTING) while offline');
    await publishRange(server, topics, 7, 8);

    await context.setOffline(false);
    await waitForLog(page, 'main', (log) => log.filter((e) => e.type === 'open').length >= 2, 8000, 'the stream to reopen once online');
    await publishRange(server, topics, 9, 10);
    const log = await waitForLog(page, 'main', hasOffset(topics, 10), 5000, 'messages up to 10 on both topics');

    const requests = sseRequests();
    assert.equal(requests.length, 2, 'exactly one reconnection reached the server');
    assert.equal(
      requests[1].headers['last-event-id'],
      lastSeen,
      `the browser must resume with the last id it saw; request headers: ${JSON.stringify(requests[1].headers)}`,
    );
    const ctx = `\nEventSource log:\n${describeLog(log)}`;
    for (const t of topics) {
      assert.deepEqual(offsets(log, t), range(1, 10), `raw offsets received on ${t}${ctx}`);
      assert.deepEqual(
        log.filter((e) => e.type === 'broadcast' && e.data.topic === t).map((e) => e.data.payload.n),
        range(1, 10),
        `payloads on ${t}${ctx}`,
      );
      assert.deepEqual(
        log.filter((e) => e.type === 'broadcast' && e.data.topic === t && e.data.meta.replayed).map((e) => e.data.meta.offset),
        range(4, 8),
        `replayed offsets on ${t}${ctx}`,
      );
    }
    assert.deepEqual(log.filter((e) => e.type === 'system'), [], `no system events${ctx}`);
  });

  test('the herald_token cookie authenticates a same-origin EventSource without a token in the URL', async () => {
    const topic = uniqueTopic('br-cookie');
    const { context, page } = await newPage(server.httpUrl);
    const path = `/sse?topic=${encodeURIComponent(topic)}`;

    // Without the cookie the request is refused (401) and the browser gives up: CLOSED.
    await openInPage(page, 'nocookie', path);
    await waitForLog(page, 'nocookie', (log) => log.some((e) => e.type === 'error' && e.readyState === 2), 5000, 'the refused stream to close');
    assert.ok(!(await logOf(page, 'nocookie')).some((e) => e.type === 'open'), 'no open without credentials');

    await context.addCookies([{ name: 'herald_token', value: anonToken(), url: server.httpUrl }]);
    await openInPage(page, 'cookie', path);
    await waitForLog(page, 'cookie', (log) => log.some((e) => e.type === 'open'), 5000, 'the cookie-authenticated stream to open');
    await publishRange(server, [topic], 1, 2);
    const log = await waitForLog(page, 'cookie', hasOffset([topic], 2), 5000, 'messages 1..2');
    assert.deepEqual(offsets(log, topic), [1, 2], describeLog(log));
  });
});
