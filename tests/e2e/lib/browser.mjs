// Headless Chromium (the system's, through playwright-core; no browser is downloaded), pages that
// record console errors and uncaught exceptions, deadline-based waits that say what they waited
// for, and screenshots under tests/e2e/artifacts/.
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const ARTIFACTS = resolve(dirname(fileURLToPath(import.meta.url)), '../artifacts');
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
const VIEWPORT = { width: 1280, height: 820 };

export function launchChromium() {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true, timeout: 20_000 });
}

/** Saves a screenshot of `page` as artifacts/<name>.png; returns its path. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

/**
 * The browser contexts of one test. open() gives each page its own context (its own cookies,
 * sessionStorage and network emulation) and records its console errors and page errors.
 */
export class Session {
  constructor(browser) {
    this.browser = browser;
    this.contexts = [];
    /** @type {Array<{ label: string, text: string, url: string }>} */
    this.errors = [];
  }

  /** Opens `url` in a new context; returns { context, page }. */
  async open(url, label) {
    const context = await this.browser.newContext({ viewport: VIEWPORT });
    this.contexts.push(context);
    const page = await context.newPage();
    this.watch(page, label);
    await page.goto(url, { timeout: 10_000 });
    return { context, page, label };
  }

  /** Records `page`'s console errors and uncaught exceptions under `label`. */
  watch(page, label) {
    page.on('console', (m) => {
      if (m.type() === 'error') this.errors.push({ label, text: m.text(), url: m.location()?.url ?? '' });
    });
    page.on('pageerror', (e) => this.errors.push({ label, text: `uncaught: ${e.stack || e.message}`, url: '' }));
  }

  /** The errors recorded, minus those `allowed` accepts. */
  unexpectedErrors(allowed = () => false) {
    return this.errors.filter((e) => !allowed(e));
  }

  async close() {
    await Promise.all(this.contexts.splice(0).map((c) => c.close().catch(() => {})));
  }
}

/** What the demo page shows, for failure messages. */
export async function describeDemo(page) {
  try {
    return await page.evaluate(() => {
      const q = (s) => document.querySelector(s);
      const all = (s) => [...document.querySelectorAll(s)];
      return JSON.stringify(
        {
          url: location.href,
          status: q('[data-testid=connection-status]')?.textContent,
          messages: all('[data-testid=chat-message]').map((e) => `${e.dataset.offset}:${e.querySelector('.msg-text')?.textContent}`),
          pending: all('[data-testid=chat-pending]').map((e) => e.querySelector('.msg-text')?.textContent),
          notices: all('[data-testid=chat-notice]').map((e) => e.textContent),
          presence: all('[data-testid=presence-member]').map((e) => e.dataset.name),
          typing: q('[data-testid=typing-indicator]')?.textContent,
          chartPoints: q('[data-testid=metrics-chart]')?.getAttribute('data-points'),
          feed: q('[data-testid=feed-status]')?.textContent,
        },
        null,
        1,
      );
    });
  } catch (err) {
    return `(page not readable: ${err.message})`;
  }
}

/**
 * Waits until `fn(arg)`, evaluated in the page every 50 ms, returns a truthy value, for at most
 * `timeout` ms; the error says `what` was awaited and what the page showed.
 */
export async function until(page, what, fn, arg, { timeout = 5000, describe = describeDemo } = {}) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout, polling: 50 });
    return await handle.jsonValue();
  } catch (err) {
    throw new Error(`timed out after ${timeout} ms waiting for ${what}: ${err.message.split('\n')[0]}\npage: ${await describe(page)}`);
  }
}
