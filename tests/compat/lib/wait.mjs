// The suite's waiting helpers (shared with the other Node suites).
export { Inbox, waitFor } from '../../support/wait.mjs';
