// Deadline-based synchronisation helpers, shared by the Node suites: wait for a promise or a
// predicate, and an inbox that collects asynchronous events (broadcasts, statuses, frames) for tests to await.

const POLL_MS = 5;

function describe(label) {
  return typeof label === 'function' ? label() : label;
}

/**
 * Waits until `what` settles. `what` is a promise, or a predicate polled until it returns a
 * truthy value (which is returned). Throws after `ms` milliseconds; `label` (a string, or a
 * function producing one at failure time) says what was awaited.
 */
export async function waitFor(what, ms, label) {
  let timer;
  let settled = false;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${ms} ms waiting for ${describe(label)}`)),
      ms,
    );
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

/** Collects pushed items; lets a test await the next item or a count of items. */
export class Inbox {
  constructor(name = 'inbox') {
    this.name = name;
    this.items = [];
    this.cursor = 0;
  }

  push(item) {
    this.items.push(item);
  }

  get length() {
    return this.items.length;
  }

  /** Resolves with the next item not yet taken by next(). */
  async next(ms, label = `next item in ${this.name}`) {
    const index = this.cursor;
    await waitFor(() => this.items.length > index, ms, label);
    this.cursor = index + 1;
    return this.items[index];
  }

  /** Resolves with the first item (taken or not) matching `predicate`. */
  async find(predicate, ms, label = `matching item in ${this.name}`) {
    return waitFor(() => this.items.find(predicate), ms, label);
  }

  /** Resolves with all items once there are at least `n`. */
  async count(n, ms, label = `${n} items in ${this.name}`) {
    await waitFor(() => this.items.length >= n, ms, () => `${describe(label)} (have ${this.items.length})`);
    return this.items.slice();
  }
}
