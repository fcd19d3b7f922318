// Small statistics for the reports: percentiles, least-squares slope, and a /proc sampler that
// records a node's RSS, open files, threads and /healthz figures at an interval.

export function percentile(values, p) {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Least-squares slope of y over x. */
export function slope(xs, ys) {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

export const mib = (kib) => kib / 1024;
export const round = (x, d = 1) => (Number.isFinite(x) ? Number(x.toFixed(d)) : x);

/** Samples `node` every `everyMs` until stop(); each sample { t (ms since start), rssKiB, fds, threads, ... }. */
export function sampler(node, everyMs, { healthz = false } = {}) {
  const samples = [];
  const t0 = Date.now();
  let timer = null;
  let stopped = false;
  const take = async () => {
    if (stopped) return;
    try {
      const s = { t: Date.now() - t0, ...node.sample() };
      if (healthz) {
        const h = await node.healthz(5000);
        s.healthzMs = h.ms;
        s.connections = h.json.connections;
        s.channels = h.json.channels;
      }
      samples.push(s);
    } catch {
      // the node is between runs (a restart)
    }
    if (!stopped) timer = setTimeout(take, everyMs);
  };
  take();
  return {
    samples,
    stop() {
      stopped = true;
      clearTimeout(timer);
      return samples;
    },
  };
}
