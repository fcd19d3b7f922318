// Deadline-based waiting (shared with the other Node suites), plus a range helper.
export { Inbox, waitFor } from '../../../../tests/support/wait.mjs';

/** [from, ..., to] */
export const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
