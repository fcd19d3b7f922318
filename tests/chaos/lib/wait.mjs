// Deadline waits for the chaos suite: a predicate polled until true or a deadline, and a promise with
// a deadline. Polling here reads state the test owns; it never stands in for an event it could await.

export async function waitUntil(predicate, ms, label, pollMs = 10) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof label === 'function' ? label() : label}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

export async function withDeadline(promise, ms, label) {
  let timer;
  try {
    return await Promise.race([
      promise,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${label}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms`: pacing of load and of fault injection only, never synchronisation. */
export const pace = (ms) => new Promise((r) => setTimeout(r, ms));
