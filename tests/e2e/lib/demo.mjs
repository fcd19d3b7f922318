// Driving the demo page (/) through its data-testid hooks.
import { until } from './browser.mjs';

const STATUS = '[data-testid=connection-status]';

/** The chat messages shown, in page order: { text, offset } (offset null when unknown). */
export function chatMessages(page) {
  return page.$$eval('[data-testid=chat-messages] [data-testid=chat-message]', (els) =>
    els.map((e) => ({
      text: e.querySelector('.msg-text')?.textContent ?? '',
      offset: e.dataset.offset === undefined ? null : Number(e.dataset.offset),
    })),
  );
}

export const texts = (messages) => messages.map((m) => m.text);

/** The connection badge's text. */
export const connectionStatus = (page) => page.locator(STATUS).textContent();

/** Waits for the connection badge to read one of `states`. */
export function waitStatus(page, states, label, timeout = 8000) {
  const wanted = Array.isArray(states) ? states : [states];
  return until(
    page,
    `${label}: the connection badge to read ${wanted.join(' or ')}`,
    ([sel, w]) => {
      const s = document.querySelector(sel)?.textContent;
      return w.includes(s) ? s : false;
    },
    [STATUS, wanted],
    { timeout },
  );
}

/** Waits until the page shows `text` among its chat messages (at least `count` times). */
export function waitMessage(page, text, label, { count = 1, timeout = 5000 } = {}) {
  return until(
    page,
    `${label}: chat message "${text}"${count > 1 ? ` ×${count}` : ''}`,
    ([t, n]) =>
      [...document.querySelectorAll('[data-testid=chat-messages] [data-testid=chat-message] .msg-text')].filter(
        (e) => e.textContent === t,
      ).length >= n,
    [text, count],
    { timeout },
  );
}

/** Waits until at least `n` chat messages are shown. */
export function waitMessageCount(page, n, label, timeout = 5000) {
  return until(
    page,
    `${label}: ${n} chat messages`,
    (k) => document.querySelectorAll('[data-testid=chat-messages] [data-testid=chat-message]').length >= k,
    n,
    { timeout },
  );
}

/** Types `text` and presses Send. */
export async function say(page, text) {
  await page.fill('[data-testid=chat-input]', text);
  await page.click('[data-testid=chat-send]');
}

/** Sends `text` and waits until the sender's own page shows it (it comes back from the server). */
export async function sayAndConfirm(page, text, label) {
  await say(page, text);
  await waitMessage(page, text, label);
}

/** Waits until the online list holds exactly `names` (any order). */
export function waitPresence(page, names, label, timeout = 5000) {
  const want = [...names].sort();
  return until(
    page,
    `${label}: the online list to be ${JSON.stringify(want)}`,
    (w) => {
      const got = [...document.querySelectorAll('[data-testid=presence-list] [data-testid=presence-member]')]
        .map((e) => e.dataset.name)
        .sort();
      return JSON.stringify(got) === JSON.stringify(w);
    },
    want,
    { timeout },
  );
}

/** Waits until the typing indicator's text satisfies `expected` (a substring, or '' for empty). */
export function waitTyping(page, expected, label, timeout = 5000) {
  return until(
    page,
    `${label}: the typing indicator to ${expected === '' ? 'be empty' : `mention "${expected}"`}`,
    (want) => {
      const text = document.querySelector('[data-testid=typing-indicator]')?.textContent ?? '';
      return want === '' ? text === '' : text.includes(want);
    },
    expected,
    { timeout },
  );
}
