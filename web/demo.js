// The Herald demo: a chat room (broadcast with history, presence, typing indicator), a live chart fed
// over Server-Sent Events, a notifications feed, and the connection state of the SDK. Plain ES
// modules, no build step: the SDK comes from /sdk/herald.js, served by Herald itself.
import { Herald, VERSION, randomId, tokenExpiresAt } from '/sdk/herald.js';

const params = new URLSearchParams(location.search);
const ROOM = (params.get('room') || 'lobby').replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 40) || 'lobby';
const CHAT_CHANNEL = `chat:${ROOM}`;
const METRICS_CHANNEL = 'demo:metrics';
const NOTIFY_CHANNEL = 'demo:notifications';
/** What a first join asks for: the newest messages of the last two minutes (the default retention). */
const HISTORY = { windowMs: 2 * 60 * 1000, limit: 50 };
const MAX_MESSAGES = 300;
const MAX_POINTS = 60;
const TYPING_THROTTLE_MS = 400;
const STORE = 'herald-demo:';

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const el = (tag, className, text) => {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
};
const str = (v, max = 500) => (typeof v === 'string' ? v.slice(0, max) : '');
const session = {
  get: (k) => {
    try {
      return sessionStorage.getItem(STORE + k);
    } catch {
      return null;
    }
  },
  set: (k, v) => {
    try {
      sessionStorage.setItem(STORE + k, v);
    } catch {
      // private mode: kept for this page only
    }
  },
};

// -- who am I ---------------------------------------------------------------------------------

const me = {
  key: session.get('key') || randomId(),
  name: str(params.get('name'), 32).trim() || session.get('name') || `Guest ${Math.floor(1000 + Math.random() * 9000)}`,
};
session.set('key', me.key);
session.set('name', me.name);

// -- tokens -----------------------------------------------------------------------------------

/**
 * Development mode: anonymous tokens from /dev/token (cached while valid). Production mode (the
 * endpoint answers 404): a token pasted into the page, kept in sessionStorage.
 */
const tokens = {
  /** @type {'dev'|'manual'|null} */
  mode: null,
  /** @type {string|null} */
  current: null,
  async fetchDev() {
    const res = await fetch('/dev/token?role=anon', { cache: 'no-store' });
    if (res.status === 404) return null;
    if (!res.ok) throw new Error(`/dev/token answered HTTP ${res.status}`);
    const body = await res.json();
    if (typeof body.token !== 'string') throw new Error('/dev/token sent no token');
    return body.token;
  },
  /** The SDK's `getToken`: a cached token for a connection attempt, a fresh one to refresh or rejoin. */
  async get(reason = 'connect') {
    if (this.mode === 'manual') {
      if (!this.current) throw new Error('no token');
      return this.current;
    }
    const exp = tokenExpiresAt(this.current);
    if (reason === 'connect' && this.current && exp !== null && exp - Date.now() > 120_000) return this.current;
    const token = await this.fetchDev();
    if (!token) throw new Error('development tokens are turned off (production mode)');
    this.current = token;
    return token;
  },
};

function showTokenBanner(message) {
  $('token-message').textContent = message;
  $('token-banner').hidden = false;
}

$('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const value = /** @type {HTMLInputElement} */ ($('token-input')).value.trim();
  if (!value) return;
  tokens.mode = 'manual';
  tokens.current = value;
  session.set('token', value);
  $('token-banner').hidden = true;
  if (clients) {
    clients.chat.setToken(value);
    clients.feed.setToken(value);
  } else startClients();
});

// -- connection badges ------------------------------------------------------------------------

function setBadge(node, state, title) {
  node.textContent = state;
  node.dataset.state = state;
  node.title = title ?? state;
}

// -- chat -------------------------------------------------------------------------------------

const chat = {
  list: /** @type {HTMLOListElement} */ ($('chat-messages')),
  pending: /** @type {HTMLOListElement} */ ($('chat-pending')),
  wrap: $('messages-wrap'),
  input: /** @type {HTMLInputElement} */ ($('chat-input')),
  /** @type {import('/sdk/herald.js').Channel|null} */
  room: null,
  typingSent: /** @type {boolean|null} */ (null),
  nameSent: '',
  lastTrack: 0,
  /** @type {ReturnType<typeof setTimeout>|null} */
  trackTimer: null,
};

const initials = (name) =>
  name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join('') || '?';
const hue = (text) => {
  let h = 0;
  for (const c of text) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
};
const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

function avatar(name) {
  const a = el('span', 'avatar', initials(name));
  a.style.setProperty('--hue', String(hue(name)));
  a.setAttribute('aria-hidden', 'true');
  return a;
}

function scrollIfNear(force, fn) {
  const w = chat.wrap;
  const near = w.scrollHeight - w.scrollTop - w.clientHeight < 80;
  fn();
  if (near || force) w.scrollTop = w.scrollHeight;
}

function updateEmpty() {
  $('chat-empty').hidden = chat.list.childElementCount + chat.pending.childElementCount > 0;
}

/** @param {import('/sdk/herald.js').BroadcastMessage} m */
function onChatMessage(m) {
  const p = m.payload && typeof m.payload === 'object' ? m.payload : {};
  const text = str(p.text);
  if (!text) return;
  const name = str(p.name, 32) || 'someone';
  const mine = typeof p.cid === 'string' && p.cid.startsWith(`${me.key}:`);
  const li = el('li', `msg${mine ? ' mine' : ''}${m.meta.replayed ? ' replayed' : ''}`);
  li.setAttribute('data-testid', 'chat-message');
  if (typeof m.meta.offset === 'number') li.dataset.offset = String(m.meta.offset);
  const body = el('div', 'bubble');
  const head = el('div', 'msg-head');
  head.append(el('span', 'author', name), el('time', 'when', clock(typeof p.at === 'number' ? p.at : Date.now())));
  body.append(head, el('div', 'msg-text', text));
  li.append(avatar(name), body);
  scrollIfNear(mine, () => {
    chat.list.append(li);
    while (chat.list.childElementCount > MAX_MESSAGES) chat.list.firstElementChild?.remove();
    if (typeof p.cid === 'string') chat.pending.querySelector(`[data-cid="${CSS.escape(p.cid)}"]`)?.remove();
  });
  updateEmpty();
}

function chatNotice(text, action) {
  const li = el('li', 'notice');
  li.setAttribute('data-testid', 'chat-notice');
  li.append(el('span', '', text));
  if (action) {
    const b = el('button', 'link', action.label);
    b.type = 'button';
    b.addEventListener('click', action.run);
    li.append(' ', b);
  }
  scrollIfNear(true, () => chat.list.append(li));
}

async function sendChat(text) {
  const cid = `${me.key}:${randomId()}`;
  const li = el('li', 'msg mine sending');
  li.dataset.cid = cid;
  li.setAttribute('data-testid', 'chat-pending');
  const body = el('div', 'bubble');
  const head = el('div', 'msg-head');
  const state = el('span', 'when', 'sending…');
  head.append(el('span', 'author', me.name), state);
  body.append(head, el('div', 'msg-text', text));
  li.append(avatar(me.name), body);
  scrollIfNear(true, () => chat.pending.append(li));
  updateEmpty();
  try {
    // Resolves once Herald stored it; the message itself comes back on the channel (self: true).
    await chat.room?.send('chat', { text, name: me.name, cid, at: Date.now() }, { timeoutMs: 60_000 });
    state.textContent = 'sent';
  } catch (err) {
    li.classList.add('failed');
    state.textContent = 'not sent';
    li.title = err instanceof Error ? err.message : String(err);
  }
}

$('chat-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = chat.input.value.trim();
  if (!text || !chat.room) return;
  chat.input.value = '';
  scheduleTrack();
  sendChat(text);
  chat.input.focus();
});

/** Publishes {name, typing} when it changed, at most once per TYPING_THROTTLE_MS (the last state always goes out). */
function scheduleTrack() {
  if (!chat.room || chat.trackTimer) return;
  const wait = Math.max(0, chat.lastTrack + TYPING_THROTTLE_MS - Date.now());
  chat.trackTimer = setTimeout(() => {
    chat.trackTimer = null;
    const typing = chat.input.value.trim() !== '';
    if (typing === chat.typingSent && me.name === chat.nameSent) return;
    chat.typingSent = typing;
    chat.nameSent = me.name;
    chat.lastTrack = Date.now();
    chat.room?.track({ name: me.name, typing }).catch(() => {
      // Over the SSE fallback presence can be seen but not published.
    });
  }, wait);
}

chat.input.addEventListener('input', scheduleTrack);

const nameInput = /** @type {HTMLInputElement} */ ($('name-input'));
nameInput.value = me.name;
nameInput.addEventListener('change', () => {
  const name = nameInput.value.trim().slice(0, 32);
  if (!name) {
    nameInput.value = me.name;
    return;
  }
  me.name = name;
  session.set('name', name);
  scheduleTrack();
});

function renderPresence() {
  if (!chat.room) return;
  const people = Object.entries(chat.room.presenceState())
    .map(([key, metas]) => {
      const meta = metas[metas.length - 1] ?? {};
      return { key, name: str(meta.name, 32) || 'someone', typing: meta.typing === true, mine: key === me.key };
    })
    .sort((a, b) => Number(b.mine) - Number(a.mine) || a.name.localeCompare(b.name));
  const list = $('presence-list');
  list.replaceChildren(
    ...people.map((p) => {
      const li = el('li', `person${p.mine ? ' mine' : ''}${p.typing ? ' is-typing' : ''}`);
      li.setAttribute('data-testid', 'presence-member');
      li.dataset.name = p.name;
      const label = el('span', 'person-name', p.name);
      li.append(avatar(p.name), label);
      if (p.mine) li.append(el('span', 'muted small', 'you'));
      else if (p.typing) li.append(el('span', 'dots', '•••'));
      return li;
    }),
  );
  $('online-count').textContent = String(people.length);
  const typing = people.filter((p) => p.typing && !p.mine).map((p) => p.name);
  $('typing-indicator').textContent =
    typing.length === 0
      ? ''
      : typing.length === 1
        ? `${typing[0]} is typing…`
        : typing.length === 2
          ? `${typing[0]} and ${typing[1]} are typing…`
          : `${typing.length} people are typing…`;
}

// -- dashboard --------------------------------------------------------------------------------

/** @type {Array<{ at: number, in: number, out: number, connections: number }>} */
const points = [];
const SVG_NS = 'http://www.w3.org/2000/svg';
const svgEl = (tag, attrs) => {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
};

function onMetrics(m) {
  const p = m.payload && typeof m.payload === 'object' ? m.payload : {};
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const at = num(p.at) || Date.now();
  if (points.length && at <= points[points.length - 1].at) return;
  points.push({ at, in: num(p.messages_in_per_sec), out: num(p.messages_out_per_sec), connections: num(p.connections) });
  while (points.length > MAX_POINTS) points.shift();
  const last = points[points.length - 1];
  $('metric-in').textContent = String(last.in);
  $('metric-out').textContent = String(last.out);
  $('metric-conn').textContent = String(last.connections);
  drawChart();
}

function niceMax(v) {
  if (v <= 4) return 4;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * p >= v) return f * p;
  return 10 * p;
}

function drawChart() {
  const svg = $('metrics-chart');
  const width = Math.max(200, Math.round(svg.clientWidth || 320));
  const height = 150;
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const pad = { l: 34, r: 8, t: 10, b: 18 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const max = niceMax(Math.max(0, ...points.map((p) => Math.max(p.in, p.out))));
  const x = (i) => pad.l + (points.length < 2 ? w : (w * (MAX_POINTS - points.length + i)) / (MAX_POINTS - 1));
  const y = (v) => pad.t + h - (h * v) / max;
  const nodes = [];
  for (const f of [0, 0.5, 1]) {
    const gy = y(max * f);
    nodes.push(svgEl('line', { x1: pad.l, x2: width - pad.r, y1: gy, y2: gy, class: 'grid' }));
    const label = svgEl('text', { x: pad.l - 6, y: gy + 4, class: 'axis', 'text-anchor': 'end' });
    label.textContent = String(max * f);
    nodes.push(label);
  }
  const xLabel = svgEl('text', { x: pad.l, y: height - 4, class: 'axis' });
  xLabel.textContent = '60 s ago';
  const nowLabel = svgEl('text', { x: width - pad.r, y: height - 4, class: 'axis', 'text-anchor': 'end' });
  nowLabel.textContent = 'now';
  nodes.push(xLabel, nowLabel);
  if (points.length) {
    const line = (key) => points.map((p, i) => `${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' ');
    const outLine = line('out');
    nodes.push(svgEl('polygon', { points: `${x(0).toFixed(1)},${y(0)} ${outLine} ${x(points.length - 1).toFixed(1)},${y(0)}`, class: 'area out' }));
    nodes.push(svgEl('polyline', { points: outLine, class: 'series out', 'data-series': 'out' }));
    nodes.push(svgEl('polyline', { points: line('in'), class: 'series in', 'data-series': 'in' }));
    const last = points.length - 1;
    nodes.push(svgEl('circle', { cx: x(last), cy: y(points[last].out), r: 3, class: 'dot out' }));
    nodes.push(svgEl('circle', { cx: x(last), cy: y(points[last].in), r: 3, class: 'dot in' }));
  } else {
    const waiting = svgEl('text', { x: pad.l + w / 2, y: pad.t + h / 2, class: 'axis', 'text-anchor': 'middle' });
    waiting.textContent = 'waiting for data…';
    nodes.push(waiting);
  }
  svg.replaceChildren(...nodes);
  svg.dataset.points = String(points.length);
}

window.addEventListener('resize', drawChart);

// -- notifications ----------------------------------------------------------------------------

const SAMPLES = [
  ['Deployment finished', 'web-7 is live in eu-west'],
  ['New comment', 'on “Quarterly plan”: looks good to me'],
  ['Build passed', 'main · 214 tests in 38 s'],
  ['Invoice paid', '#1042 · 120.00 EUR'],
  ['Backup completed', '2.3 GB in 41 s'],
];
let sampleIndex = Math.floor(Math.random() * SAMPLES.length);

function unreadCount() {
  return $('notifications-list').querySelectorAll('.note.unread').length;
}

function updateUnread() {
  const n = unreadCount();
  $('unread').textContent = String(n);
  $('unread').dataset.count = String(n);
  const nav = $('unread-nav');
  nav.textContent = String(n);
  nav.hidden = n === 0;
  document.title = n ? `(${n}) Herald demo` : 'Herald demo';
}

function onNotification(m) {
  const p = m.payload && typeof m.payload === 'object' ? m.payload : {};
  const li = el('li', 'note unread');
  li.setAttribute('data-testid', 'notification');
  if (typeof m.meta.offset === 'number') li.dataset.offset = String(m.meta.offset);
  const text = el('div', 'note-text');
  text.append(el('strong', '', str(p.title, 80) || 'Notification'), el('span', 'muted', str(p.body, 200)));
  const from = str(p.from, 32);
  li.append(el('i', 'unread-dot'), text, el('time', 'when', `${clock(typeof p.at === 'number' ? p.at : Date.now())}${from ? ` · ${from}` : ''}`));
  li.addEventListener('click', () => {
    li.classList.remove('unread');
    updateUnread();
  });
  const list = $('notifications-list');
  list.prepend(li);
  while (list.childElementCount > 50) list.lastElementChild?.remove();
  $('notif-empty').hidden = true;
  updateUnread();
}

$('mark-read').addEventListener('click', () => {
  for (const li of $('notifications-list').querySelectorAll('.note.unread')) li.classList.remove('unread');
  updateUnread();
});

$('notify').addEventListener('click', async () => {
  const button = /** @type {HTMLButtonElement} */ ($('notify'));
  const [title, body] = SAMPLES[sampleIndex++ % SAMPLES.length];
  button.disabled = true;
  try {
    const token = await tokens.get('connect');
    const res = await fetch('/api/broadcast', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        messages: [{ topic: NOTIFY_CHANNEL, event: 'notification', payload: { title, body, from: me.name, at: Date.now() } }],
      }),
    });
    if (res.status !== 202) throw new Error(`HTTP ${res.status} ${await res.text()}`);
    button.title = '';
  } catch (err) {
    button.title = `Not sent: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    button.disabled = false;
  }
});

// -- start ------------------------------------------------------------------------------------

/** @type {{ chat: Herald, feed: Herald }|null} */
let clients = null;

function startClients() {
  const getToken = (reason) => tokens.get(reason);
  // Chat: WebSocket (SSE plus HTTP as the fallback), presence and history.
  const chatClient = new Herald(location.origin, { getToken, storageKey: `${STORE}chat` });
  // Dashboard and notifications: Server-Sent Events only (one stream for both channels).
  const feedClient = new Herald(location.origin, { getToken, transports: ['sse'], storageKey: `${STORE}feed` });
  clients = { chat: chatClient, feed: feedClient };

  const badge = $('connection-status');
  chatClient.on('state', (s) => {
    setBadge(badge, s.state, s.reason ? `${s.state}: ${s.reason}` : s.state);
    document.body.dataset.connection = s.state;
    $('transport').textContent = s.transport && s.state !== 'offline' ? `via ${s.transport === 'sse' ? 'SSE' : 'WebSocket'}` : '';
    if (s.state === 'failed') {
      if (tokens.mode === 'manual') showTokenBanner(`The connection failed (${s.reason}). Paste another token to try again.`);
      else chatNotice(`Connection failed: ${s.reason}.`, { label: 'Retry', run: () => chatClient.connect() });
    }
  });
  feedClient.on('state', (s) => setBadge($('feed-status'), s.state, s.reason ? `${s.state}: ${s.reason}` : s.state));

  // The first join shows the recent messages; every rejoin after that recovers what was missed.
  const room = chatClient.channel(CHAT_CHANNEL, {
    broadcast: { self: true },
    presence: { key: me.key },
    history: { since: Date.now() - HISTORY.windowMs, limit: HISTORY.limit },
  });
  chat.room = room;
  room.on('broadcast', 'chat', onChatMessage);
  room.on('presence', 'sync', renderPresence);
  room.on('recovery', () =>
    chatNotice('Reconnected, but some messages could not be replayed.', { label: 'Reload', run: () => location.reload() }),
  );
  let lastProblem = '';
  room.on('status', ({ status, reason }) => {
    if (status === 'errored' && reason && reason !== lastProblem) chatNotice(`The room is unavailable: ${reason}`);
    lastProblem = status === 'errored' ? (reason ?? '') : '';
  });
  room.subscribe();
  scheduleTrack();

  const metrics = feedClient.channel(METRICS_CHANNEL);
  metrics.on('broadcast', 'metrics', onMetrics);
  metrics.subscribe();
  const notes = feedClient.channel(NOTIFY_CHANNEL);
  notes.on('broadcast', 'notification', onNotification);
  notes.subscribe();

  // For the browser console and for tests.
  Object.assign(window, { herald: { chat: chatClient, feed: feedClient, room } });
}

async function start() {
  $('room-name').textContent = `#${ROOM}`;
  $('sdk-version').textContent = `SDK ${VERSION}`;
  drawChart();
  updateEmpty();
  let token;
  try {
    token = await tokens.fetchDev();
  } catch (err) {
    showTokenBanner(`Could not get a development token (${err instanceof Error ? err.message : String(err)}). Retrying…`);
    setTimeout(start, 3000);
    return;
  }
  if (token) {
    tokens.mode = 'dev';
    tokens.current = token;
    $('token-banner').hidden = true;
    startClients();
    return;
  }
  tokens.mode = 'manual';
  const saved = session.get('token');
  if (saved) {
    tokens.current = saved;
    startClients();
    return;
  }
  showTokenBanner(
    'This server runs in production mode, so it hands out no development tokens (/dev/token is off). Paste a JWT signed with the server’s secret (role anon or authenticated) to use the demo.',
  );
}

start();
