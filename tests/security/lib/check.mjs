// Small helpers shared by the cases: assertions that say what was seen, tokens for a server, names.
import { Phx } from './phoenix.mjs';
import { token } from './tokens.mjs';

/** Throws `seen` unless `cond` holds; returns `seen`. */
export function must(cond, seen) {
  if (!cond) throw new Error(seen);
  return seen;
}

/** A valid token of `role` for `srv` (with the claims the server requires, e.g. iss and aud). */
const valid = (role) => (srv, opts = {}) => token(srv.secret, { role, ...opts, extra: { ...srv.claims, ...opts.extra } });
export const anon = valid('anon');
export const authenticated = valid('authenticated');
export const service = valid('service_role');

let counter = 0;
/** A channel name no other case uses. */
export const uniq = (prefix) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${(counter += 1)}`;

/** Opens an anon socket, runs `fn(phx)`, and always closes it. */
export async function withSocket(srv, fn, opts = {}) {
  const phx = await Phx.open(srv, opts.token ?? anon(srv), opts);
  try {
    return await fn(phx);
  } finally {
    phx.close();
  }
}

/**
 * After hostile frames: the socket is still open, answers a heartbeat, and sent nothing else since
 * `before` frames. Returns a description.
 */
export async function aliveAndSilent(phx, before) {
  must(phx.open, `socket closed (${phx.closed?.code} ${phx.closed?.reason})`);
  must(await phx.heartbeat(5000), 'heartbeat not answered ok');
  const extra = phx.frames.slice(before).filter((f) => !(f.topic === 'phoenix' && f.event === 'phx_reply'));
  must(extra.length === 0, `server replied to the bad frames: ${JSON.stringify(extra.slice(0, 2)).slice(0, 300)}`);
  return 'ignored, socket open, heartbeat answered';
}

/** A join's error reason, or throws when it was accepted. */
export function reasonOf(reply) {
  must(reply?.status === 'error', `join accepted: ${JSON.stringify(reply).slice(0, 200)}`);
  return reply.response?.reason;
}

/** Reads a text in `seen`-friendly length. */
export const clip = (s, n = 140) => {
  const t = String(s).replace(/\s+/g, ' ');
  return t.length > n ? `${t.slice(0, n)}…` : t;
};

/** Depth of nested single-element arrays ending in [] (iterative: no recursion limit), or -1. */
export function arrayDepth(v) {
  let depth = 0;
  let x = v;
  while (Array.isArray(x)) {
    depth += 1;
    if (x.length === 0) return depth;
    if (x.length !== 1) return -1;
    [x] = x;
  }
  return -1;
}
