// The demo app (/) in headless Chromium against a real Herald in development mode: two people chat
// and see each other online and typing; one goes offline (its TCP connections really cut, through a
// proxy) and gets what it missed exactly once, in order; a reload shows the recent history; the
// dashboard chart is fed over SSE; notifications arrive with an unread count. Every test also
// checks that no page logged a console error or threw.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, afterEach, before, describe, test } from 'node:test';
import { CHROMIUM, Session, launchChromium, screenshot, until } from './lib/browser.mjs';
import {
  chatMessages,
  connectionStatus,
  say,
  sayAndConfirm,
  texts,
  waitMessage,
  waitMessageCount,
  waitPresence,
  waitStatus,
  waitTyping,
} from './lib/demo.mjs';
import { startHerald } from './lib/herald.mjs';
import { startProxy } from './lib/proxy.mjs';

let server;
let browser;
let session;
const proxies = [];

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_BIN)`);
  [server, browser] = await Promise.all([startHerald(), launchChromium()]);
});

afterEach(async () => {
  await session?.close();
  session = null;
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Opens the demo as `name` in room `room` (through `origin`, default the server itself). */
function openDemo(name, room, origin = server.origin) {
  session ??= new Session(browser);
  return session.open(`${origin}/?name=${encodeURIComponent(name)}&room=${encodeURIComponent(room)}`, name);
}

function assertNoConsoleErrors(allowed) {
  const errors = session.unexpectedErrors(allowed);
  assert.deepEqual(errors, [], `console errors or uncaught exceptions:\n${JSON.stringify(errors, null, 1)}`);
}

describe('demo app', () => {
  test('two people chat and see each other online and typing', async () => {
    const room = 'e2e-chat';
    const alice = await openDemo('Alice', room);
    const bob = await openDemo('Bob', room);
    await waitStatus(alice.page, 'live', 'Alice');
    await waitStatus(bob.page, 'live', 'Bob');
    await waitPresence(alice.page, ['Alice', 'Bob'], 'Alice');
    await waitPresence(bob.page, ['Alice', 'Bob'], 'Bob');
    assert.equal(await alice.page.locator('[data-testid=typing-indicator]').textContent(), '', 'nobody types yet');

    await alice.page.fill('[data-testid=chat-input]', 'Hello Bob');
    await waitTyping(bob.page, 'Alice is typing', 'Bob');
    await until(
      bob.page,
      'Bob: Alice marked as typing in the online list',
      () => document.querySelector('[data-testid=presence-member][data-name="Alice"]')?.classList.contains('is-typing'),
    );
    await screenshot(bob.page, '1-chat-bob-sees-alice-typing');
    await alice.page.click('[data-testid=chat-send]');
    await waitMessage(bob.page, 'Hello Bob', 'Bob');
    await waitTyping(bob.page, '', 'Bob (Alice sent her message)');

    await bob.page.fill('[data-testid=chat-input]', 'Hi Alice');
    await waitTyping(alice.page, 'Bob is typing', 'Alice');
    await bob.page.press('[data-testid=chat-input]', 'Enter');
    await waitMessage(alice.page, 'Hi Alice', 'Alice');
    await waitMessage(bob.page, 'Hi Alice', 'Bob');
    await waitTyping(alice.page, '', 'Alice (Bob sent his message)');

    const expected = [
      { text: 'Hello Bob', offset: 1 },
      { text: 'Hi Alice', offset: 2 },
    ];
    assert.deepEqual(await chatMessages(alice.page), expected, 'Alice sees both messages once, in order');
    assert.deepEqual(await chatMessages(bob.page), expected, 'Bob sees both messages once, in order');
    await screenshot(alice.page, '1-chat-alice');
    assertNoConsoleErrors();
  });

  test('offline: the cut-off page gets the missed messages exactly once and in order', async () => {
    const room = 'e2e-offline';
    const proxy = await startProxy(server.port);
    proxies.push(proxy);
    // Alice's page, and so every connection it opens, goes through the proxy.
    const alice = await openDemo('Alice', room, `http://127.0.0.1:${proxy.port}`);
    const bob = await openDemo('Bob', room);
    await waitStatus(alice.page, 'live', 'Alice');
    await waitStatus(bob.page, 'live', 'Bob');
    await waitPresence(bob.page, ['Alice', 'Bob'], 'Bob');
    await sayAndConfirm(bob.page, 'before the outage', 'Bob');
    await waitMessage(alice.page, 'before the outage', 'Alice');

    await alice.context.setOffline(true);
    const cut = proxy.cut();
    assert.ok(cut >= 2, `Alice's connections ran through the proxy (${cut} sockets cut)`);
    assert.equal(await alice.page.evaluate(() => navigator.onLine), false, 'navigator.onLine while offline');
    const state = await waitStatus(alice.page, ['reconnecting', 'offline'], 'Alice (offline)');
    // The server saw Alice's connection die: her presence leaves Bob's list.
    await waitPresence(bob.page, ['Bob'], 'Bob (Alice cut off)');

    const missed = ['while you were away 1', 'while you were away 2', 'while you were away 3'];
    for (const text of missed) await sayAndConfirm(bob.page, text, 'Bob');
    // Alice writes too; the SDK keeps the message until it can send it.
    await say(alice.page, 'queued by Alice');
    await until(alice.page, 'Alice: her message waits as pending', () =>
      [...document.querySelectorAll('[data-testid=chat-pending] .msg-text')].some((e) => e.textContent === 'queued by Alice'),
    );
    assert.deepEqual(texts(await chatMessages(alice.page)), ['before the outage'], 'nothing reaches Alice while she is cut off');
    assert.ok(['reconnecting', 'offline'].includes(await connectionStatus(alice.page)), 'still not live while offline');
    await screenshot(alice.page, `2-offline-alice-${state}`);

    proxy.restore();
    await alice.context.setOffline(false);
    await waitStatus(alice.page, 'live', 'Alice (back online)');
    await waitMessage(bob.page, 'queued by Alice', 'Bob');
    await waitPresence(bob.page, ['Alice', 'Bob'], 'Bob (Alice back)');
    // A last message after the recovery: anything replayed twice would be in front of it.
    await sayAndConfirm(bob.page, 'after the outage', 'Bob');
    await waitMessage(alice.page, 'after the outage', 'Alice');

    const expected = ['before the outage', ...missed, 'queued by Alice', 'after the outage'].map((text, i) => ({
      text,
      offset: i + 1,
    }));
    assert.deepEqual(await chatMessages(alice.page), expected, 'Alice: every message exactly once, in order');
    assert.deepEqual(await chatMessages(bob.page), expected, 'Bob: every message exactly once, in order');
    assert.equal(await alice.page.locator('[data-testid=chat-pending]').count(), 0, 'nothing left pending');
    await screenshot(alice.page, '2-offline-alice-recovered');
    // Cutting Alice's connections ends her event stream in the middle of its chunked response, which
    // Chromium may report as a failed resource load (depending on whether its offline emulation
    // aborted the request first). Nothing else is allowed.
    const proxyOrigin = `http://127.0.0.1:${proxy.port}`;
    assertNoConsoleErrors(
      (e) => e.label === 'Alice' && e.url.startsWith(`${proxyOrigin}/sse?`) && e.text === 'Failed to load resource: net::ERR_INCOMPLETE_CHUNKED_ENCODING',
    );
  });

  test('a reload shows the recent history', async () => {
    const room = 'e2e-history';
    const alice = await openDemo('Alice', room);
    const bob = await openDemo('Bob', room);
    await waitStatus(alice.page, 'live', 'Alice');
    await waitStatus(bob.page, 'live', 'Bob');
    await sayAndConfirm(alice.page, 'first', 'Alice');
    await sayAndConfirm(bob.page, 'second', 'Bob');
    await sayAndConfirm(alice.page, 'third', 'Alice');
    await waitMessageCount(alice.page, 3, 'Alice');
    const before = await chatMessages(alice.page);
    assert.deepEqual(texts(before), ['first', 'second', 'third']);

    await alice.page.reload({ timeout: 10_000 });
    await waitStatus(alice.page, 'live', 'Alice (reloaded)');
    await waitMessageCount(alice.page, 3, 'Alice (reloaded)');
    assert.deepEqual(await chatMessages(alice.page), before, 'the same messages, with their offsets, after the reload');
    await sayAndConfirm(bob.page, 'fourth', 'Bob');
    await waitMessage(alice.page, 'fourth', 'Alice (reloaded)');
    assert.deepEqual(texts(await chatMessages(alice.page)), ['first', 'second', 'third', 'fourth'], 'live messages follow the history');
    await screenshot(alice.page, '3-history-after-reload');

    // A newcomer (a fresh browser context, nothing stored) gets the same history from the server.
    const carol = await openDemo('Carol', room);
    await waitStatus(carol.page, 'live', 'Carol');
    await waitMessageCount(carol.page, 4, 'Carol');
    assert.deepEqual(await chatMessages(carol.page), await chatMessages(alice.page), 'Carol sees the history too');
    assertNoConsoleErrors();
  });

  test('the dashboard chart receives points from demo:metrics over SSE', async () => {
    const alice = await openDemo('Alice', 'e2e-dashboard');
    await until(alice.page, 'the feed badge to read "live"', () => document.querySelector('[data-testid=feed-status]')?.textContent === 'live', undefined, {
      timeout: 8000,
    });
    await until(
      alice.page,
      'the chart to hold 3 points',
      () => Number(document.querySelector('[data-testid=metrics-chart]')?.dataset.points) >= 3,
      undefined,
      { timeout: 8000 },
    );
    const chart = await alice.page.evaluate(() => {
      const svg = document.querySelector('[data-testid=metrics-chart]');
      const pointsOf = (series) => svg.querySelector(`polyline[data-series=${series}]`)?.getAttribute('points')?.trim().split(/\s+/).length ?? 0;
      return {
        points: Number(svg.dataset.points),
        in: pointsOf('in'),
        out: pointsOf('out'),
        connections: document.querySelector('[data-testid=metric-connections]').textContent,
      };
    });
    assert.ok(chart.points >= 3, `data points: ${chart.points}`);
    assert.equal(chart.in, chart.points, 'the "in" line has a vertex per point');
    assert.equal(chart.out, chart.points, 'the "out" line has a vertex per point');
    assert.match(chart.connections, /^\d+$/, 'the connection count is shown');
    assert.ok(Number(chart.connections) >= 2, `the page's own connections are counted (${chart.connections})`);
    await screenshot(alice.page, '7-dashboard');
    assertNoConsoleErrors();
  });

  test('notifications arrive over SSE with an unread count', async () => {
    const alice = await openDemo('Alice', 'e2e-notify');
    const bob = await openDemo('Bob', 'e2e-notify');
    for (const p of [alice, bob]) {
      await until(p.page, `${p.label}: the feed badge to read "live"`, () => document.querySelector('[data-testid=feed-status]')?.textContent === 'live', undefined, {
        timeout: 8000,
      });
    }
    assert.equal(await bob.page.locator('[data-testid=notifications-unread]').textContent(), '0');
    await alice.page.click('[data-testid=notification-send]');
    await alice.page.click('[data-testid=notification-send]');
    for (const p of [alice, bob]) {
      await until(p.page, `${p.label}: two notifications, both unread`, () =>
        document.querySelectorAll('[data-testid=notification]').length === 2 &&
        document.querySelector('[data-testid=notifications-unread]').textContent === '2',
      );
    }
    await screenshot(bob.page, '4-notifications-unread');
    await bob.page.click('[data-testid=notifications-mark-read]');
    assert.equal(await bob.page.locator('[data-testid=notifications-unread]').textContent(), '0', 'marked read');
    assert.equal(await alice.page.locator('[data-testid=notifications-unread]').textContent(), '2', "Alice's stay unread");
    assertNoConsoleErrors();
  });
});
