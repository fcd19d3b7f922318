// The Herald admin page: a live view of one node from GET /api/admin/stats (Server-Sent Events, a
// `stats` snapshot every second). The stream needs a service_role token: in development mode it comes
// from /dev/token; in production mode the page asks for one and keeps it in sessionStorage.

const TOKEN_KEY = 'herald-admin:token';
const SAMPLES = 60;

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
const sum = (o) => (o && typeof o === 'object' ? Object.values(o).reduce((a, v) => a + num(v), 0) : 0);
const fmt = (v) => (v >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1));

/** @type {'dev'|'manual'|null} */
let mode = null;
/** @type {EventSource|null} */
let source = null;
let retries = 0;
/** @type {ReturnType<typeof setTimeout>|null} */
let retryTimer = null;
/** @type {any} */
let previous = null;
const rates = { in: /** @type {number[]} */ ([]), out: /** @type {number[]} */ ([]), connections: /** @type {number[]} */ ([]) };

function setStatus(state, title) {
  const badge = $('stream-status');
  badge.textContent = state;
  badge.dataset.state = state;
  badge.title = title ?? state;
}

function showBanner(message) {
  $('token-message').textContent = message;
  $('token-banner').hidden = false;
}

function session(key, value) {
  try {
    if (value === undefined) return sessionStorage.getItem(key);
    sessionStorage.setItem(key, value);
  } catch {
    // storage unavailable: the token lives as long as the page
  }
  return null;
}

function retryLater() {
  if (retryTimer) return;
  retries += 1;
  const delay = Math.min(30_000, 1000 * 2 ** Math.min(retries - 1, 5));
  retryTimer = setTimeout(() => {
    retryTimer = null;
    start();
  }, delay);
}

/** @param {string} token */
function open(token) {
  source?.close();
  previous = null;
  rates.in = [];
  rates.out = [];
  rates.connections = [];
  setStatus('connecting');
  const es = new EventSource(`/api/admin/stats?apikey=${encodeURIComponent(token)}`);
  source = es;
  es.addEventListener('open', () => {
    if (source !== es) return;
    retries = 0;
    setStatus('live', 'Receiving a snapshot every second');
    $('token-banner').hidden = true;
  });
  es.addEventListener('stats', (ev) => {
    if (source !== es) return;
    try {
      render(JSON.parse(/** @type {MessageEvent} */ (ev).data));
    } catch (err) {
      console.warn('undecodable stats event', err);
    }
  });
  es.addEventListener('error', () => {
    if (source !== es) return;
    if (es.readyState !== EventSource.CLOSED) {
      // The browser reconnects by itself.
      setStatus('reconnecting', 'The stream was interrupted; reconnecting');
      return;
    }
    // Closed for good: the server refused the request (401/403) or is gone.
    es.close();
    if (mode === 'dev') {
      setStatus('reconnecting', 'Getting a new development token');
      retryLater();
    } else {
      setStatus('error', 'The stats stream was refused');
      showBanner('The server refused the stats stream. The token must be valid and carry the service_role.');
    }
  });
}

async function start() {
  let res;
  try {
    res = await fetch('/dev/token?role=service_role', { cache: 'no-store' });
  } catch {
    setStatus('reconnecting', 'The server cannot be reached');
    retryLater();
    return;
  }
  if (res.ok) {
    const body = await res.json().catch(() => ({}));
    if (typeof body.token === 'string') {
      mode = 'dev';
      open(body.token);
      return;
    }
  }
  if (res.status !== 404) {
    setStatus('reconnecting', `/dev/token answered HTTP ${res.status}`);
    retryLater();
    return;
  }
  mode = 'manual';
  const saved = session(TOKEN_KEY);
  if (saved) {
    open(saved);
    return;
  }
  setStatus('closed', 'Waiting for a token');
  showBanner(
    'This server runs in production mode, so the page cannot get a token by itself (/dev/token is off). Paste a JWT with role service_role, signed with the server’s secret.',
  );
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = /** @type {HTMLInputElement} */ ($('token-input')).value.trim();
  if (!token) return;
  mode = 'manual';
  session(TOKEN_KEY, token);
  $('token-banner').hidden = true;
  open(token);
});

// -- rendering --------------------------------------------------------------------------------

function push(list, v) {
  list.push(v);
  while (list.length > SAMPLES) list.shift();
}

function sparkline(svg, values) {
  const w = 200;
  const h = 42;
  const max = Math.max(1, ...values);
  const step = w / (SAMPLES - 1);
  const x0 = w - step * (values.length - 1);
  const pts = values.map((v, i) => `${(x0 + i * step).toFixed(1)},${(h - 2 - ((h - 4) * v) / max).toFixed(1)}`);
  const ns = 'http://www.w3.org/2000/svg';
  const base = document.createElementNS(ns, 'line');
  for (const [k, v] of Object.entries({ x1: 0, x2: w, y1: h - 1, y2: h - 1, 'vector-effect': 'non-scaling-stroke' })) base.setAttribute(k, String(v));
  const nodes = [base];
  if (pts.length) {
    const area = document.createElementNS(ns, 'polygon');
    area.setAttribute('points', `${x0.toFixed(1)},${h} ${pts.join(' ')} ${w},${h}`);
    const line = document.createElementNS(ns, 'polyline');
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    nodes.push(area, line);
  }
  svg.replaceChildren(...nodes);
  svg.dataset.points = String(values.length);
}

function render(s) {
  const ws = num(s.connections?.websocket);
  const sse = num(s.connections?.sse);
  $('conn-ws').textContent = String(ws);
  $('conn-sse').textContent = String(sse);
  push(rates.connections, ws + sse);
  sparkline($('spark-conn'), rates.connections);
  $('channels-total').textContent = String(num(s.channels_total));
  $('presences').textContent = String(num(s.presences));
  $('joins').textContent = String(num(s.joins));
  $('slow').textContent = String(num(s.slow_consumers));
  $('updated').textContent = `updated ${new Date(num(s.at) || Date.now()).toLocaleTimeString()}`;

  // Per-second rates from the cumulative counters of two consecutive snapshots.
  if (previous) {
    const dt = (num(s.at) - num(previous.at)) / 1000;
    if (dt > 0) {
      const rate = (key, transport) => {
        const now = transport ? num(s[key]?.[transport]) : sum(s[key]);
        const before = transport ? num(previous[key]?.[transport]) : sum(previous[key]);
        return Math.max(0, now - before) / dt;
      };
      const rIn = rate('messages_in');
      const rOut = rate('messages_out');
      push(rates.in, rIn);
      push(rates.out, rOut);
      $('rate-in').textContent = fmt(rIn);
      $('rate-out').textContent = fmt(rOut);
      $('in-detail').textContent = `WebSocket ${fmt(rate('messages_in', 'websocket'))} · HTTP ${fmt(rate('messages_in', 'http'))}`;
      $('out-detail').textContent = `WebSocket ${fmt(rate('messages_out', 'websocket'))} · SSE ${fmt(rate('messages_out', 'sse'))}`;
      sparkline($('spark-in'), rates.in);
      sparkline($('spark-out'), rates.out);
    }
  }
  previous = s;

  const channels = Array.isArray(s.channels) ? s.channels : [];
  const body = $('channels');
  if (channels.length === 0) {
    const tr = el('tr', 'placeholder');
    const td = el('td', '', 'No channels yet.');
    td.colSpan = 4;
    tr.append(td);
    body.replaceChildren(tr);
  } else {
    body.replaceChildren(
      ...channels.map((c) => {
        const tr = el('tr');
        tr.setAttribute('data-testid', 'admin-channel');
        tr.dataset.topic = String(c.topic);
        tr.dataset.private = String(c.private === true);
        tr.append(
          el('td', 'topic', String(c.topic)),
          el('td', '', c.private ? 'private' : 'public'),
          el('td', 'num', String(num(c.subscribers))),
          el('td', 'num', String(num(c.presences))),
        );
        return tr;
      }),
    );
  }
  const total = num(s.channels_total);
  $('channels-note').textContent = total > channels.length ? `the ${channels.length} busiest of ${total}` : '';

  const errors = Object.entries(s.errors && typeof s.errors === 'object' ? s.errors : {})
    .map(([reason, count]) => [reason, num(count)])
    .filter(([, count]) => Number(count) > 0)
    .sort((a, b) => Number(b[1]) - Number(a[1]));
  const eb = $('errors');
  if (errors.length === 0) {
    const tr = el('tr', 'placeholder');
    const td = el('td', '', 'None.');
    td.colSpan = 2;
    tr.append(td);
    eb.replaceChildren(tr);
  } else {
    eb.replaceChildren(
      ...errors.map(([reason, count]) => {
        const tr = el('tr');
        tr.setAttribute('data-testid', 'admin-error');
        tr.dataset.reason = String(reason);
        tr.append(el('td', 'topic', String(reason)), el('td', 'num', String(count)));
        return tr;
      }),
    );
  }
}

start();
