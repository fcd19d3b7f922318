// Deadline-based waiting: every wait names what it waited for and fails after its deadline.

const POLL_MS = 5;

const describe = (label) => (typeof label === 'function' ? label() : label);

/**
 * Waits until `what` settles: a promise, or a predicate polled until it returns a truthy value
 * (which is returned). Throws after `ms` milliseconds.
 */
export async function waitFor(what, ms, label) {
  let timer;
  let settled = false;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${describe(label)}`)), ms);
  });
  try {
    if (typeof what === 'function') {
      const poll = (async () => {
        while (!settled) {
          const value = await what();
          if (value) return value;
          await new Promise((r) => setTimeout(r, POLL_MS));
        }
        return undefined;
      })();
      return await Promise.race([poll, deadline]);
    }
    return await Promise.race([Promise.resolve(what), deadline]);
  } finally {
    settled = true;
    clearTimeout(timer);
  }
}

/** Collects pushed items; a test awaits a count or a matching item. */
export class Inbox {
  constructor(name = 'inbox') {
    this.name = name;
    this.items = [];
  }

  push(item) {
    this.items.push(item);
  }

  get length() {
    return this.items.length;
  }

  async count(n, ms, label = `${n} items in ${this.name}`) {
    await waitFor(() => this.items.length >= n, ms, () => `${describe(label)} (have ${this.items.length})`);
    return this.items.slice();
  }

  async find(predicate, ms, label = `a matching item in ${this.name}`) {
    return waitFor(() => this.items.find(predicate), ms, label);
  }
}

/** [from, ..., to] */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
