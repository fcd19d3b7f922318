// The admin page (/admin) in headless Chromium: live connection counts, channels with their
// subscribers and presences, message rates; and both pages in production mode, where /dev/token
// is off and they ask for a token instead.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, afterEach, before, describe, test } from 'node:test';
import { CHROMIUM, Session, launchChromium, screenshot, until } from './lib/browser.mjs';
import { sayAndConfirm, waitPresence, waitStatus } from './lib/demo.mjs';
import { mintToken, startHerald } from './lib/herald.mjs';

let server;
let browser;
let session;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_BIN)`);
  [server, browser] = await Promise.all([startHerald(), launchChromium()]);
  session = null;
});

afterEach(async () => {
  await session?.close();
  session = null;
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const open = (url, label) => {
  session ??= new Session(browser);
  return session.open(url, label);
};

/** What the admin page shows, for failure messages. */
async function describeAdmin(page) {
  try {
    return await page.evaluate(() =>
      JSON.stringify({
        status: document.querySelector('[data-testid=admin-stream-status]')?.textContent,
        websocket: document.querySelector('[data-testid=admin-connections-websocket]')?.textContent,
        sse: document.querySelector('[data-testid=admin-connections-sse]')?.textContent,
        in: document.querySelector('[data-testid=admin-rate-in]')?.textContent,
        out: document.querySelector('[data-testid=admin-rate-out]')?.textContent,
        channels: [...document.querySelectorAll('[data-testid=admin-channel]')].map((r) => r.textContent),
        banner: document.querySelector('[data-testid=token-banner]')?.hidden ? null : document.querySelector('[data-testid=token-banner]')?.textContent,
      }),
    );
  } catch (err) {
    return `(page not readable: ${err.message})`;
  }
}

const adminUntil = (page, what, fn, arg, timeout = 5000) => until(page, what, fn, arg, { timeout, describe: describeAdmin });

/** The cells of the admin row of `topic`, or null. */
const channelRow = (page, topic) =>
  page.evaluate((t) => {
    const row = [...document.querySelectorAll('[data-testid=admin-channel]')].find((r) => r.dataset.topic === t);
    return row ? [...row.cells].map((c) => c.textContent) : null;
  }, topic);

function assertNoConsoleErrors(allowed) {
  const errors = session.unexpectedErrors(allowed);
  assert.deepEqual(errors, [], `console errors or uncaught exceptions:\n${JSON.stringify(errors, null, 1)}`);
}

describe('admin page', () => {
  test('shows the chat connections, the chat channel and message rates', async () => {
    const room = 'e2e-admin';
    const topic = `chat:${room}`;
    const alice = await open(`${server.origin}/?name=Alice&room=${room}`, 'Alice');
    const bob = await open(`${server.origin}/?name=Bob&room=${room}`, 'Bob');
    await waitStatus(alice.page, 'live', 'Alice');
    await waitStatus(bob.page, 'live', 'Bob');
    await waitPresence(alice.page, ['Alice', 'Bob'], 'Alice');

    const admin = await open(`${server.origin}/admin`, 'admin');
    const page = admin.page;
    await adminUntil(page, 'the stats stream to be live', () => document.querySelector('[data-testid=admin-stream-status]')?.textContent === 'live', undefined, 8000);
    await adminUntil(
      page,
      'two WebSocket and two SSE connections (each chat page has one of each)',
      () =>
        Number(document.querySelector('[data-testid=admin-connections-websocket]').textContent) >= 2 &&
        Number(document.querySelector('[data-testid=admin-connections-sse]').textContent) >= 2,
    );
    await adminUntil(
      page,
      `the channel ${topic} with 2 subscribers and 2 presences`,
      (t) => {
        const row = [...document.querySelectorAll('[data-testid=admin-channels] [data-testid=admin-channel]')].find((r) => r.dataset.topic === t);
        return row && row.cells[2].textContent === '2' && row.cells[3].textContent === '2';
      },
      topic,
    );
    assert.deepEqual(await channelRow(page, topic), [topic, 'public', '2', '2']);
    assert.ok(await channelRow(page, 'demo:metrics'), 'the metrics feed channel is listed');

    // Traffic shows up in the rates: the chat messages come in over the WebSocket.
    await adminUntil(page, 'a first rate', () => document.querySelector('[data-testid=admin-rate-in]').textContent !== '–', undefined, 4000);
    for (let i = 1; i <= 3; i += 1) await sayAndConfirm(alice.page, `load ${i}`, 'Alice');
    await adminUntil(page, 'messages in per second above 0', () => Number(document.querySelector('[data-testid=admin-rate-in]').textContent) > 0, undefined, 4000);
    await adminUntil(page, 'messages out per second above 0', () => Number(document.querySelector('[data-testid=admin-rate-out]').textContent) > 0, undefined, 4000);
    await adminUntil(page, 'sparklines with 2 samples', () => Number(document.querySelector('[data-testid=admin-spark-in]').dataset.points) >= 2, undefined, 4000);
    await screenshot(page, '6-admin');

    // Live: Bob leaves, and the counts follow.
    await bob.context.close();
    await adminUntil(
      page,
      `${topic} down to 1 subscriber`,
      (t) => {
        const row = [...document.querySelectorAll('[data-testid=admin-channel]')].find((r) => r.dataset.topic === t);
        return row && row.cells[2].textContent === '1' && row.cells[3].textContent === '1';
      },
      topic,
    );
    assertNoConsoleErrors();
  });

  test('production mode: no development tokens, both pages ask for one', async (t) => {
    const prod = await startHerald({ production: true });
    try {
      const res = await fetch(`${prod.origin}/dev/token`);
      assert.equal(res.status, 404, '/dev/token is off in production mode');

      const demo = await open(`${prod.origin}/?name=Dana&room=e2e-prod`, 'demo (production)');
      await until(demo.page, 'the token banner', () => !document.querySelector('[data-testid=token-banner]').hidden);
      assert.match(await demo.page.locator('[data-testid=token-banner]').textContent(), /production mode/);
      assert.equal(await demo.page.locator('[data-testid=connection-status]').textContent(), 'closed');
      await screenshot(demo.page, '8-production-demo-asks-for-a-token');
      await demo.page.fill('[data-testid=token-input]', mintToken('anon'));
      await demo.page.press('[data-testid=token-input]', 'Enter');
      await waitStatus(demo.page, 'live', 'demo (production)');
      await waitPresence(demo.page, ['Dana'], 'demo (production)');
      assert.ok(await demo.page.locator('[data-testid=token-banner]').isHidden(), 'the banner goes once a token is given');

      const admin = await open(`${prod.origin}/admin`, 'admin (production)');
      await adminUntil(admin.page, 'the token banner', () => !document.querySelector('[data-testid=token-banner]').hidden);
      assert.match(await admin.page.locator('[data-testid=token-banner]').textContent(), /production mode/);
      // An anon token is refused by the stats stream (service_role only).
      await admin.page.fill('[data-testid=token-input]', mintToken('anon'));
      await admin.page.press('[data-testid=token-input]', 'Enter');
      await adminUntil(admin.page, 'the refusal', () => document.querySelector('[data-testid=admin-stream-status]').textContent === 'error');
      assert.match(await admin.page.locator('[data-testid=token-banner]').textContent(), /service_role/);
      await admin.page.fill('[data-testid=token-input]', mintToken('service_role'));
      await admin.page.press('[data-testid=token-input]', 'Enter');
      await adminUntil(admin.page, 'the stats stream to be live', () => document.querySelector('[data-testid=admin-stream-status]').textContent === 'live');
      await adminUntil(admin.page, "the demo page's WebSocket", () => Number(document.querySelector('[data-testid=admin-connections-websocket]').textContent) >= 1);
      await adminUntil(admin.page, 'the chat channel', () => document.querySelector('[data-testid=admin-channel][data-topic="chat:e2e-prod"]'));
      await screenshot(admin.page, '8-production-admin');
      for (const e of session.errors) t.diagnostic(`expected browser console error (${e.label}): ${e.text} ${e.url}`);
      // The browser reports the answers it was told to expect: /dev/token's 404 and the refused
      // stream (401/403). Anything else is a failure.
      assertNoConsoleErrors(
        (e) =>
          (/\/dev\/token/.test(e.url) && /404/.test(e.text)) ||
          (/\/api\/admin\/stats/.test(e.url) && /40[13]/.test(e.text)),
      );
    } finally {
      await session?.close();
      session = null;
      await prod.stop();
    }
  });
});
