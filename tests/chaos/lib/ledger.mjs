// The account of a scenario: what publishers had accepted (ack or 2xx), what stayed unacknowledged,
// and what each subscriber received, de-duplicated by position (epoch, offset) the way a recovering
// client does. Reports, per subscriber and in total: delivered, duplicated (one message at two
// positions, or delivered twice to the app), lost (accepted, never delivered, no recovered:false),
// recovered:false notices, and out-of-order deliveries.

export class Ledger {
  constructor() {
    /** k -> { topic, state: 'accepted' | 'unacked' | 'refused', via } */
    this.sent = new Map();
    this.subscribers = [];
  }

  /** A publish attempt is starting (state until settled: 'unacked'). */
  attempt(k, topic, via) {
    this.sent.set(k, { topic, state: 'unacked', via });
  }

  settle(k, state) {
    const s = this.sent.get(k);
    if (s) s.state = state;
  }

  subscriber(name, kind, topics) {
    const sub = new SubscriberAccount(name, kind, topics);
    this.subscribers.push(sub);
    return sub;
  }

  counts(filter = () => true) {
    const c = { accepted: 0, unacked: 0, refused: 0 };
    for (const s of this.sent.values()) if (filter(s)) c[s.state] += 1;
    return c;
  }

  /** Accepted messages of `topics` that `sub` has not received. */
  missing(sub) {
    const out = [];
    for (const [k, s] of this.sent) if (s.state === 'accepted' && sub.topics.has(s.topic) && !sub.keys.has(k)) out.push(k);
    return out;
  }

  /** Whether every subscriber that was not told recovered:false has every accepted message. */
  complete(subs = this.subscribers) {
    return subs.every((sub) => sub.recoveredFalse > 0 || sub.closedForGood || this.missing(sub).length === 0);
  }

  /** Per-subscriber rows and the totals. */
  account(subs = this.subscribers) {
    const rows = subs.map((sub) => {
      const missing = this.missing(sub);
      let delivered = 0;
      let unackedDelivered = 0;
      for (const k of sub.keys.keys()) {
        const s = this.sent.get(k);
        if (s?.state === 'accepted') delivered += 1;
        else if (s?.state === 'unacked') unackedDelivered += 1;
      }
      const toldReload = sub.recoveredFalse > 0;
      return {
        name: sub.name,
        kind: sub.kind,
        accepted: delivered + missing.length,
        delivered,
        duplicated: sub.duplicated,
        lost: toldReload ? 0 : missing.length,
        missedAfterReload: toldReload ? missing.length : 0,
        recoveredFalse: sub.recoveredFalse,
        redelivered: sub.redelivered,
        outOfOrder: sub.outOfOrder,
        unackedDelivered,
        reconnects: sub.reconnects,
        unknown: sub.unknown,
      };
    });
    const total = {};
    for (const key of ['accepted', 'delivered', 'duplicated', 'lost', 'missedAfterReload', 'recoveredFalse', 'redelivered', 'outOfOrder', 'unackedDelivered', 'reconnects', 'unknown']) {
      total[key] = rows.reduce((a, r) => a + r[key], 0);
    }
    // Unacknowledged messages: delivered to every subscriber of their topic, to none, or to some.
    const unacked = { total: 0, all: 0, none: 0, some: 0 };
    for (const [k, s] of this.sent) {
      if (s.state !== 'unacked') continue;
      unacked.total += 1;
      const subsOf = subs.filter((x) => x.topics.has(s.topic) && x.recoveredFalse === 0 && !x.closedForGood);
      const got = subsOf.filter((x) => x.keys.has(k)).length;
      if (got === 0) unacked.none += 1;
      else if (got === subsOf.length) unacked.all += 1;
      else unacked.some += 1;
    }
    return { rows, total, sent: this.counts(), unacked };
  }
}

class SubscriberAccount {
  constructor(name, kind, topics) {
    this.name = name;
    this.kind = kind;
    this.topics = new Set(topics);
    this.positions = new Set(); // "topic|epoch|offset"
    this.keys = new Map(); // k -> deliveries after position de-duplication
    this.last = new Map(); // topic -> last offset (per epoch)
    this.duplicated = 0;
    this.redelivered = 0;
    this.outOfOrder = 0;
    this.recoveredFalse = 0;
    this.reconnects = 0;
    this.unknown = 0;
    this.closedForGood = false;
    this.closeReasons = [];
  }

  /**
   * One delivery to the app. `meta` carries the position; `k` the publisher's key. Returns false when
   * the position had been seen (a replay overlap, dropped like the client's de-duplication does).
   */
  deliver(topic, meta, k) {
    if (meta && meta.offset !== undefined) {
      const pos = `${topic}|${meta.epoch}|${meta.offset}`;
      if (this.positions.has(pos)) {
        this.redelivered += 1;
        return false;
      }
      this.positions.add(pos);
      const key = `${topic}|${meta.epoch}`;
      const prev = this.last.get(key) ?? 0;
      if (meta.offset <= prev) this.outOfOrder += 1;
      else this.last.set(key, meta.offset);
    }
    if (typeof k !== 'string') {
      this.unknown += 1;
      return true;
    }
    const n = this.keys.get(k) ?? 0;
    if (n > 0) this.duplicated += 1;
    this.keys.set(k, n + 1);
    return true;
  }
}

const fmt = (n) => (typeof n === 'number' ? n.toLocaleString('en-US') : String(n));

/** A Markdown table of `rows` (objects) with `columns` ([key, header]). */
export function table(rows, columns) {
  const head = `| ${columns.map(([, h]) => h).join(' | ')} |`;
  const sep = `|${columns.map(() => '---').join('|')}|`;
  const body = rows.map((r) => `| ${columns.map(([k]) => fmt(r[k])).join(' | ')} |`);
  return [head, sep, ...body].join('\n');
}

/** The standard account table: one row per kind of client, then the total. */
export function accountTable(acc) {
  const byKind = new Map();
  for (const r of acc.rows) {
    const g = byKind.get(r.kind) ?? { name: r.kind, clients: 0 };
    g.clients += 1;
    for (const [k, v] of Object.entries(r)) if (typeof v === 'number') g[k] = (g[k] ?? 0) + v;
    byKind.set(r.kind, g);
  }
  const rows = [...byKind.values(), { name: '**total**', clients: acc.rows.length, ...acc.total }];
  return table(rows, [
    ['name', 'subscribers'],
    ['clients', 'clients'],
    ['accepted', 'accepted (expected deliveries)'],
    ['delivered', 'delivered'],
    ['duplicated', 'duplicated'],
    ['lost', 'lost'],
    ['recoveredFalse', 'told recovered: false'],
    ['redelivered', 'replay overlaps dropped by position'],
    ['outOfOrder', 'out of order'],
    ['reconnects', 'reconnects'],
  ]);
}
