// GET /sse through the unmodified npm `eventsource` client: automatic reconnection after a broken
// TCP connection resumes every topic of the stream by Last-Event-ID with nothing lost or doubled; a
// new EventSource resumes from ?last_event_id= (and its reconnects use the newer Last-Event-ID);
// garbage, tampered, foreign and out-of-retention cursors give `system` {recovered:false} per topic
// and the stream goes on live; refusals before the stream (401/400/403/429) with their JSON bodies;
// every way of passing the token; presence events; keep-alive comments; HTTP/2 cleartext (prior
// knowledge) with node:http2.
import assert from 'node:assert/strict';
import { connect as h2connect } from 'node:http2';
import { after, afterEach, before, describe, test } from 'node:test';
import { disconnectAll, makeClient, subscribed, uniqueTopic, wire } from './lib/client.mjs';
import { everyByte, RICH_PAYLOAD } from './lib/assertions.mjs';
import { startHerald } from './lib/herald.mjs';
import { post } from './lib/http.mjs';
import {
  broadcasts,
  describeEvents,
  offsetsOf,
  publish,
  publishRange,
  range,
  recordEventSource,
  startBreakingProxy,
} from './lib/sse.mjs';
import { anonToken, authToken, expiredToken, forgedToken, serviceToken } from './lib/tokens.mjs';
import { waitFor } from './lib/wait.mjs';

/** Messages kept per channel by `small` (the retention test overflows it). */
const SMALL_HISTORY = 5;

let server; // default settings (history: 100 messages / 2 minutes, keep-alive 15 s)
let small; // history of SMALL_HISTORY messages, keep-alive every second
const recorders = [];
const proxies = [];

before(async () => {
  [server, small] = await Promise.all([
    startHerald(),
    startHerald({
      env: { HERALD_HISTORY_MAX_MESSAGES: String(SMALL_HISTORY), HERALD_SSE_KEEPALIVE_SECS: '1' },
    }),
  ]);
});

afterEach(async () => {
  for (const r of recorders.splice(0)) r.close();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  await disconnectAll();
});

after(async () => {
  await Promise.all([server?.stop(), small?.stop()]);
});

/** The /sse URL on `base` for `topics` with extra query parameters. */
function sseUrl(base, topics, params = {}) {
  const q = new URLSearchParams();
  for (const t of topics) q.append('topic', t);
  for (const [k, v] of Object.entries(params)) q.append(k, v);
  return `${base}/sse?${q}`;
}

/** An EventSource recorder that afterEach closes. */
function open(url, options) {
  const r = recordEventSource(url, options);
  recorders.push(r);
  return r;
}

/** Waits until `rec` has received a broadcast with offset `offset` on every topic of `topics`. */
function waitForOffsets(rec, topics, offset, ms, s = server) {
  return waitFor(
    () => {
      const got = broadcasts(rec.events.items);
      return topics.every((t) => offsetsOf(got, t).includes(offset));
    },
    ms,
    () => `offset ${offset} on ${topics.join(', ')}; events:\n${describeEvents(rec.events.items)}\nserver log tail:\n${s.logs().slice(-2000)}`,
  );
}

/**
 * Asserts the exact offsets and payloads (arrival order, duplicates kept) per topic, and which
 * offsets carry meta.replayed (not checked when `replayedOffsets` is null).
 */
function assertSequence(rec, topics, expected, replayedOffsets = []) {
  const got = broadcasts(rec.events.items);
  const ctx = () => `events:\n${describeEvents(rec.events.items)}`;
  for (const t of topics) {
    assert.deepEqual(offsetsOf(got, t), expected, `offsets on ${t} (arrival order); ${ctx()}`);
    assert.deepEqual(
      got.filter((b) => b.topic === t).map((b) => b.n),
      expected,
      `payloads {n} on ${t}; ${ctx()}`,
    );
    if (replayedOffsets === null) continue;
    assert.deepEqual(
      got.filter((b) => b.topic === t && b.replayed).map((b) => b.offset),
      replayedOffsets,
      `offsets marked meta.replayed on ${t}; ${ctx()}`,
    );
  }
}

const systemEvents = (rec) => rec.events.items.filter((e) => e.type === 'system').map((e) => e.data);

/** A well-formed cursor with one character changed (not the last, whose low bits may be padding). */
function tamper(cursor) {
  const i = Math.floor(cursor.length / 2);
  const swapped = cursor[i] === 'A' ? 'B' : 'A';
  return `${cursor.slice(0, i)}${swapped}${cursor.slice(i + 1)}`;
}

describe('resume', () => {
  test('a reconnect after a broken TCP connection resumes both topics by Last-Event-ID: nothing lost or doubled', async () => {
    const topics = [uniqueTopic('sse-a'), uniqueTopic('sse-b')];
    const proxy = await startBreakingProxy(server.port);
    proxies.push(proxy);
    const rec = open(sseUrl(`http://127.0.0.1:${proxy.port}`, topics, { apikey: anonToken() }));
    await rec.opens.count(1, 5000, 'the stream to open');

    await publishRange(server, topics, 1, 5);
    await waitForOffsets(rec, topics, 5, 5000);
    const lastSeen = rec.events.items.at(-1).lastEventId;
    assert.ok(lastSeen, 'broadcasts carry an id');

    // Break the connection; hold the reconnect until more has been published.
    proxy.hold();
    assert.equal(proxy.break(), 1, 'one open connection through the proxy');
    await rec.errors.count(1, 5000, 'EventSource to report the broken connection');
    await publishRange(server, topics, 6, 10);
    const sseRequests = () => proxy.requests().filter((r) => r.path.startsWith('/sse?'));
    await waitFor(() => sseRequests().length >= 2, 8000, 'EventSource to reconnect (server sent retry: 2000)');
    await publishRange(server, topics, 11, 12);
    proxy.release();
    await rec.opens.count(2, 5000, 'the resumed stream to open');
    await publishRange(server, topics, 13, 15);
    await waitForOffsets(rec, topics, 15, 5000);

    const requests = sseRequests();
    assert.equal(requests.length, 2, 'exactly one reconnect');
    assert.equal(requests[0].headers['last-event-id'], undefined, 'the first request has no Last-Event-ID');
    assert.equal(
      requests[1].headers['last-event-id'],
      lastSeen,
      `the reconnect must present the last id seen; request headers: ${JSON.stringify(requests[1].headers)}`,
    );
    assertSequence(rec, topics, range(1, 15), range(6, 12));
    assert.deepEqual(systemEvents(rec), [], 'no system events on a clean resume');
  });

  test('steady publishing across two broken connections: nothing lost or doubled', async () => {
    const topics = [uniqueTopic('sse-a'), uniqueTopic('sse-b')];
    const proxy = await startBreakingProxy(server.port);
    proxies.push(proxy);
    const rec = open(sseUrl(`http://127.0.0.1:${proxy.port}`, topics, { apikey: anonToken() }));
    await rec.opens.count(1, 5000, 'the stream to open');

    // One message per topic every PACE_MS until told to stop: a steady load (not a synchronisation
    // point) that keeps the ~2 s reconnection gap well inside the 100 messages of history.
    const PACE_MS = 25;
    let n = 0;
    let stop = false;
    const publisher = (async () => {
      while (!stop) {
        n += 1;
        await publishRange(server, topics, n, n);
        await new Promise((r) => setTimeout(r, PACE_MS));
      }
    })();
    publisher.catch(() => {}); // awaited (and its failure reported) below
    try {
      for (const opens of [2, 3]) {
        const at = n;
        await waitForOffsets(rec, topics, at + 5, 5000);
        assert.equal(proxy.break(), 1, 'one open connection through the proxy');
        await rec.opens.count(opens, 8000, `reconnection ${opens - 1}`);
      }
      const at = n;
      await waitForOffsets(rec, topics, at + 5, 5000);
    } finally {
      stop = true;
      await publisher;
    }
    await waitForOffsets(rec, topics, n, 5000);
    assertSequence(rec, topics, range(1, n), null);
    for (const t of topics) {
      const replayed = broadcasts(rec.events.items).filter((b) => b.topic === t && b.replayed);
      assert.ok(replayed.length > 0, `something was published while ${t} was disconnected and replayed`);
    }
    assert.deepEqual(systemEvents(rec), [], 'no system events');
  });

  test('a new EventSource resumes from ?last_event_id= of an earlier one: nothing lost or doubled', async () => {
    const topics = [uniqueTopic('sse-a'), uniqueTopic('sse-b')];
    const first = open(sseUrl(server.httpUrl, topics, { apikey: anonToken() }));
    await first.opens.count(1, 5000, 'the first stream to open');
    await publishRange(server, topics, 1, 3);
    await waitForOffsets(first, topics, 3, 5000);
    const lastSeen = first.events.items.at(-1).lastEventId;
    first.close();
    assertSequence(first, topics, range(1, 3));

    await publishRange(server, topics, 4, 6);
    const second = open(sseUrl(server.httpUrl, topics, { apikey: anonToken(), last_event_id: lastSeen }));
    await second.opens.count(1, 5000, 'the second stream to open');
    await publishRange(server, topics, 7, 9);
    await waitForOffsets(second, topics, 9, 5000);

    assertSequence(second, topics, range(4, 9), range(4, 6));
    assert.deepEqual(systemEvents(second), [], 'no system events on a clean resume');
  });

  test('a stream opened with ?last_event_id= reconnects with its newer Last-Event-ID, which wins over the stale query', async () => {
    const topics = [uniqueTopic('sse-a'), uniqueTopic('sse-b')];
    const first = open(sseUrl(server.httpUrl, topics, { apikey: anonToken() }));
    await first.opens.count(1, 5000, 'the first stream to open');
    await publishRange(server, topics, 1, 2);
    await waitForOffsets(first, topics, 2, 5000);
    const stale = first.events.items.at(-1).lastEventId;
    first.close();

    await publishRange(server, topics, 3, 4);
    const proxy = await startBreakingProxy(server.port);
    proxies.push(proxy);
    const rec = open(sseUrl(`http://127.0.0.1:${proxy.port}`, topics, { apikey: anonToken(), last_event_id: stale }));
    await rec.opens.count(1, 5000, 'the resumed stream to open');
    await publishRange(server, topics, 5, 6);
    await waitForOffsets(rec, topics, 6, 5000);
    const lastSeen = rec.events.items.at(-1).lastEventId;

    proxy.hold();
    assert.equal(proxy.break(), 1, 'one open connection through the proxy');
    await rec.errors.count(1, 5000, 'EventSource to report the broken connection');
    await publishRange(server, topics, 7, 8);
    const sseRequests = () => proxy.requests().filter((r) => r.path.startsWith('/sse?'));
    await waitFor(() => sseRequests().length >= 2, 8000, 'EventSource to reconnect');
    proxy.release();
    await rec.opens.count(2, 5000, 'the stream to reopen');
    await publishRange(server, topics, 9, 9);
    await waitForOffsets(rec, topics, 9, 5000);

    const again = sseRequests()[1];
    assert.equal(again.headers['last-event-id'], lastSeen, 'the reconnect presents the newest id');
    assert.ok(again.path.includes(`last_event_id=${encodeURIComponent(stale)}`), `the URL still carries the stale cursor: ${again.path}`);
    assertSequence(rec, topics, range(3, 9), [3, 4, 7, 8]);
    assert.deepEqual(systemEvents(rec), [], 'no system events');
  });

  test('a resume with more topics than the cursor knows: known topics replay, the new one is reported', async () => {
    const [a, b] = [uniqueTopic('sse-a'), uniqueTopic('sse-b')];
    const first = open(sseUrl(server.httpUrl, [a], { apikey: anonToken() }));
    await first.opens.count(1, 5000, 'the first stream to open');
    await publishRange(server, [a, b], 1, 2);
    await waitForOffsets(first, [a], 2, 5000);
    const lastSeen = first.events.items.at(-1).lastEventId;
    first.close();

    await publishRange(server, [a, b], 3, 4);
    const second = open(sseUrl(server.httpUrl, [a, b], { apikey: anonToken(), last_event_id: lastSeen }));
    await second.opens.count(1, 5000, 'the second stream to open');
    await publishRange(server, [a, b], 5, 5);
    await waitForOffsets(second, [a, b], 5, 5000);

    assertSequence(second, [a], range(3, 5), range(3, 4));
    assertSequence(second, [b], [5]);
    assert.deepEqual(systemEvents(second), [{ topic: b, recovered: false }], 'system events');
  });
});

describe('unusable cursors', () => {
  for (const how of ['query', 'header']) {
    for (const kind of ['garbage', 'tampered', 'foreign']) {
      test(`a ${kind} cursor (${how === 'query' ? '?last_event_id=' : 'Last-Event-ID header'}) gives system recovered:false per topic, then live messages`, async () => {
        const topics = [uniqueTopic('sse-a'), uniqueTopic('sse-b')];
        // A real cursor for these topics, from a stream that saw messages 1..2.
        const seed = open(sseUrl(server.httpUrl, topics, { apikey: anonToken() }));
        await seed.opens.count(1, 5000, 'the seed stream to open');
        await publishRange(server, topics, 1, 2);
        await waitForOffsets(seed, topics, 2, 5000);
        const real = seed.events.items.find((e) => e.type === 'broadcast').lastEventId;
        seed.close();
        let cursor = kind === 'garbage' ? 'not-a-cursor!@#' : tamper(real);
        if (kind === 'foreign') {
          // A genuine cursor, but of a stream on other topics.
          const others = [uniqueTopic('sse-x'), uniqueTopic('sse-y')];
          const other = open(sseUrl(server.httpUrl, others, { apikey: anonToken() }));
          await other.opens.count(1, 5000, 'the other stream to open');
          await publishRange(server, others, 1, 1);
          await waitForOffsets(other, others, 1, 5000);
          cursor = other.events.items.at(-1).lastEventId;
          other.close();
        }
        assert.notEqual(cursor, real);

        const rec =
          how === 'query'
            ? open(sseUrl(server.httpUrl, topics, { apikey: anonToken(), last_event_id: cursor }))
            : open(sseUrl(server.httpUrl, topics, { apikey: anonToken() }), { headers: { 'Last-Event-ID': cursor } });
        await rec.opens.count(1, 5000, 'the stream to open');
        await waitFor(() => systemEvents(rec).length >= 2, 5000, () => `two system events; events:\n${describeEvents(rec.events.items)}`);
        assert.deepEqual(
          systemEvents(rec).sort((x, y) => x.topic.localeCompare(y.topic)),
          topics.map((topic) => ({ topic, recovered: false })).sort((x, y) => x.topic.localeCompare(y.topic)),
        );
        await publishRange(server, topics, 3, 4);
        await waitForOffsets(rec, topics, 4, 5000);
        // Nothing replayed (the earlier 1..2 are not re-sent); live from the current top.
        assertSequence(rec, topics, [3, 4]);
        assert.equal(systemEvents(rec).length, 2, `exactly one system event per topic; events:\n${describeEvents(rec.events.items)}`);
      });
    }
  }

  test('a cursor older than the retained history: that topic is reported, the other replays', async () => {
    const [a, b] = [uniqueTopic('sse-a'), uniqueTopic('sse-b')];
    const first = open(sseUrl(small.httpUrl, [a, b], { apikey: anonToken() }));
    await first.opens.count(1, 5000, 'the first stream to open');
    await publishRange(small, [a, b], 1, 1);
    await waitForOffsets(first, [a, b], 1, 5000, small);
    const lastSeen = first.events.items.at(-1).lastEventId;
    first.close();

    // a overflows its history (offsets 2..12 published, only the last SMALL_HISTORY kept); b does not.
    await publishRange(small, [a], 2, SMALL_HISTORY + 7);
    await publishRange(small, [b], 2, 3);
    const second = open(sseUrl(small.httpUrl, [a, b], { apikey: anonToken(), last_event_id: lastSeen }));
    await second.opens.count(1, 5000, 'the second stream to open');
    await waitFor(() => systemEvents(second).length >= 1, 5000, () => `a system event; events:\n${describeEvents(second.events.items)}`);
    const liveA = SMALL_HISTORY + 8;
    await publish(small, { topic: a, event: 'e', payload: { n: liveA } }, { topic: b, event: 'e', payload: { n: 4 } });
    await waitFor(
      () => {
        const got = broadcasts(second.events.items);
        return offsetsOf(got, a).includes(liveA) && offsetsOf(got, b).includes(4);
      },
      5000,
      () => `the live messages; events:\n${describeEvents(second.events.items)}`,
    );
    assert.deepEqual(systemEvents(second), [{ topic: a, recovered: false }], 'system events');
    assertSequence(second, [a], [liveA]);
    assertSequence(second, [b], [2, 3, 4], [2, 3]);
  });
});

describe('refusals before the stream', () => {
  const fetchSse = async (url, init = {}) => {
    const controller = new AbortController();
    const res = await fetch(url, { ...init, signal: controller.signal });
    return { res, controller };
  };
  const jsonOf = async (res) => {
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/, 'error content-type');
    return res.json();
  };

  test('no credentials: 401 {"error":"API key is missing"}', async () => {
    const { res } = await fetchSse(sseUrl(server.httpUrl, ['room']));
    assert.equal(res.status, 401);
    assert.deepEqual(await jsonOf(res), { error: 'API key is missing' });
  });

  for (const [name, make] of [
    ['forged', forgedToken],
    ['expired', () => expiredToken()],
    ['malformed', () => 'not.a.jwt'],
  ]) {
    test(`a ${name} token: 401 with an error`, async () => {
      const { res } = await fetchSse(sseUrl(server.httpUrl, ['room'], { apikey: make() }));
      assert.equal(res.status, 401);
      const body = await jsonOf(res);
      assert.equal(typeof body.error, 'string');
      assert.ok(body.error.length > 0 && body.error !== 'API key is missing', `error: ${JSON.stringify(body)}`);
    });
  }

  test('no topic: 400 naming the parameter', async () => {
    const { res } = await fetchSse(`${server.httpUrl}/sse?apikey=${anonToken()}`);
    assert.equal(res.status, 400);
    const body = await jsonOf(res);
    assert.match(body.error, /topic/, JSON.stringify(body));
  });

  test('more than 32 topics, or an empty topic: 400 naming the parameter', async () => {
    const many = Array.from({ length: 33 }, (_, i) => `t${i}`);
    for (const topics of [many, ['ok', '']]) {
      const { res } = await fetchSse(sseUrl(server.httpUrl, topics, { apikey: anonToken() }));
      assert.equal(res.status, 400, `topics ${JSON.stringify(topics)}`);
      const body = await jsonOf(res);
      assert.match(body.error, /topic/, JSON.stringify(body));
    }
    const { res, controller } = await fetchSse(sseUrl(server.httpUrl, many.slice(0, 32), { apikey: anonToken() }));
    try {
      assert.equal(res.status, 200, '32 topics are allowed');
    } finally {
      controller.abort();
    }
  });

  test('anon token on a private channel: 403; an authenticated token gets the stream', async () => {
    const topic = uniqueTopic('sse-private');
    const { res } = await fetchSse(sseUrl(server.httpUrl, [topic], { private: '1', apikey: anonToken() }));
    assert.equal(res.status, 403);
    const body = await jsonOf(res);
    assert.match(body.error, new RegExp(topic), JSON.stringify(body));

    const ok = await fetchSse(sseUrl(server.httpUrl, [topic], { private: '1', apikey: authToken() }));
    try {
      assert.equal(ok.res.status, 200);
      assert.match(ok.res.headers.get('content-type') ?? '', /^text\/event-stream/);
      assert.equal(ok.res.headers.get('cache-control'), 'no-cache');
    } finally {
      ok.controller.abort();
    }
  });

  test('a full node: 429 {"error":"Too many connected users"}; the slot is freed when the client goes', async () => {
    const full = await startHerald({ env: { HERALD_MAX_CONNECTIONS: '1', HERALD_SSE_KEEPALIVE_SECS: '1' } });
    try {
      const url = sseUrl(full.httpUrl, [uniqueTopic('sse-full')], { apikey: anonToken() });
      const first = open(url);
      await first.opens.count(1, 5000, 'the first stream to open');
      const { res } = await fetchSse(url);
      assert.equal(res.status, 429);
      assert.deepEqual(await jsonOf(res), { error: 'Too many connected users' });
      first.close();
      // Herald notices the closed stream (at the latest on its next keep-alive write) and frees the
      // slot; a stream opened before that is refused, and an EventSource does not retry a refusal.
      await waitFor(
        async () => (await (await fetch(`${full.httpUrl}/healthz`)).json()).connections === 0,
        8000,
        "the first stream's slot to be freed",
      );
      const second = open(url);
      await second.opens.count(1, 8000, () => `a stream after the first one went; errors: ${JSON.stringify(second.errors.items)}`);
    } finally {
      for (const r of recorders.splice(0)) r.close();
      await full.stop();
    }
  });

  test('the EventSource client reports a refusal as an error and stops (no reconnect loop)', async () => {
    const rec = open(sseUrl(server.httpUrl, ['room']));
    const err = await rec.errors.next(5000, 'an error event');
    assert.equal(err.code, 401, JSON.stringify(err));
    assert.equal(rec.es.readyState, rec.es.CLOSED);
    assert.equal(rec.opens.length, 0);
  });
});

describe('credentials', () => {
  const ways = [
    ['Authorization: Bearer', (t) => ({ headers: { Authorization: `Bearer ${t}` } })],
    ['apikey header', (t) => ({ headers: { apikey: t } })],
    ['apikey query parameter', (t) => ({ params: { apikey: t } })],
    ['access_token query parameter', (t) => ({ params: { access_token: t } })],
    ['herald_token cookie', (t) => ({ headers: { Cookie: `other=1; herald_token=${t}` } })],
  ];
  for (const [name, how] of ways) {
    test(`token by ${name}`, async () => {
      const topic = uniqueTopic('sse-auth');
      const { headers, params } = how(anonToken());
      const rec = open(sseUrl(server.httpUrl, [topic], params), { headers });
      await rec.opens.count(1, 5000, () => `the stream to open; errors: ${JSON.stringify(rec.errors.items)}`);
      await publishRange(server, [topic], 1, 1);
      await waitForOffsets(rec, [topic], 1, 5000);
      assertSequence(rec, [topic], [1]);
    });
  }
});

describe('payloads', () => {
  test('JSON fidelity (pretty-printed with CRLF, unicode, line separators), raw bytes as base64, odd event names', async () => {
    const topic = uniqueTopic('sse-payload');
    const rec = open(sseUrl(server.httpUrl, [topic], { apikey: anonToken() }));
    await rec.opens.count(1, 5000, 'the stream to open');
    const single = (event) => `/api/broadcast/${encodeURIComponent(topic)}/events/${encodeURIComponent(event)}`;
    const pretty = `{\r\n  "text": "a\\nb\\r\\n",\r\n  "seps": "\u2028|\u2029",\n  "list": [\n    1,\n    2\n  ]\n}\n`;
    const bytes = everyByte();
    // One after the other, so the offsets follow this order.
    const sends = [
      () => post(server, single('rich'), { token: serviceToken(), json: RICH_PAYLOAD }),
      () => post(server, single('pretty'), { token: serviceToken(), body: pretty, contentType: 'application/json' }),
      () => post(server, single('raw'), { token: serviceToken(), body: bytes, contentType: 'application/octet-stream' }),
    ];
    for (const send of sends) {
      const res = await send();
      assert.equal(res.status, 202, res.text);
    }
    await publish(server, { topic, event: 'two\nlines: data: x', payload: 'a string' });
    const got = (await rec.events.count(4, 5000, () => `4 broadcasts; events:\n${describeEvents(rec.events.items)}`)).map((e) => e.data);
    assert.deepEqual(got.map((d) => d.event), ['rich', 'pretty', 'raw', 'two\nlines: data: x']);
    assert.deepEqual(got[0].payload, RICH_PAYLOAD);
    assert.deepEqual(got[1].payload, JSON.parse(pretty));
    assert.equal(got[2].encoding, 'base64');
    assert.equal(Buffer.from(got[2].payload, 'base64').toString('hex'), Buffer.from(bytes).toString('hex'));
    assert.equal(got[3].payload, 'a string');
    assert.deepEqual(got.map((d) => d.meta.offset), [1, 2, 3, 4]);
    assert.deepEqual(got.map((d) => d.topic), [topic, topic, topic, topic]);
    assert.deepEqual(got.map((d) => d.encoding), [undefined, undefined, 'base64', undefined], 'only raw bytes are marked base64');
  });
});

describe('presence, keep-alive, HTTP/2', () => {
  test('presence=1: presence_state per topic on open, presence_diff on join and leave', async () => {
    const [a, b] = [uniqueTopic('sse-pres'), uniqueTopic('sse-pres')];
    const rec = open(sseUrl(server.httpUrl, [a, b], { apikey: anonToken(), presence: '1' }));
    await rec.opens.count(1, 5000, 'the stream to open');
    const states = await waitFor(
      () => {
        const s = rec.events.items.filter((e) => e.type === 'presence_state');
        return s.length >= 2 && s;
      },
      5000,
      () => `two presence_state events; events:\n${describeEvents(rec.events.items)}`,
    );
    assert.deepEqual(
      states.map((e) => e.data).sort((x, y) => x.topic.localeCompare(y.topic)),
      [a, b].sort().map((topic) => ({ topic, payload: {} })),
    );

    const client = makeClient(server);
    const channel = client.channel(a, { config: { presence: { key: 'alice' } } });
    await subscribed(channel);
    assert.equal(await channel.track({ mood: 'ok' }), 'ok', wire(client));
    const diffs = () => rec.events.items.filter((e) => e.type === 'presence_diff').map((e) => e.data);
    const join = await waitFor(() => diffs()[0], 5000, () => `a presence_diff; events:\n${describeEvents(rec.events.items)}`);
    assert.equal(join.topic, a);
    assert.deepEqual(Object.keys(join.payload.joins), ['alice']);
    assert.deepEqual(join.payload.leaves, {});
    assert.equal(join.payload.joins.alice.metas[0].mood, 'ok');

    assert.equal(await channel.untrack(), 'ok', wire(client));
    const leave = await waitFor(() => diffs()[1], 5000, () => `a second presence_diff; events:\n${describeEvents(rec.events.items)}`);
    assert.equal(leave.topic, a);
    assert.deepEqual(leave.payload.joins, {});
    assert.deepEqual(Object.keys(leave.payload.leaves), ['alice']);
    assert.ok(diffs().every((d) => d.topic === a), 'no presence events on the other topic');
  });

  test('without presence=1 no presence events are sent', async () => {
    const topic = uniqueTopic('sse-nopres');
    const plain = open(sseUrl(server.httpUrl, [topic], { apikey: anonToken() }));
    const withPresence = open(sseUrl(server.httpUrl, [topic], { apikey: anonToken(), presence: '1' }));
    await plain.opens.count(1, 5000, 'the plain stream to open');
    await withPresence.opens.count(1, 5000, 'the presence stream to open');
    const client = makeClient(server);
    const channel = client.channel(topic, { config: { presence: { key: 'bob' } } });
    await subscribed(channel);
    assert.equal(await channel.track({}), 'ok', wire(client));
    await withPresence.events.find((e) => e.type === 'presence_diff', 5000, 'the presence_diff on the presence stream');
    // Published after the diff went out: on the plain stream a presence event would come first.
    await publishRange(server, [topic], 1, 1);
    await waitForOffsets(plain, [topic], 1, 5000);
    assert.deepEqual(plain.events.items.map((e) => e.type), ['broadcast'], describeEvents(plain.events.items));
  });

  test('raw stream: retry and id first, keep-alive comments (HERALD_SSE_KEEPALIVE_SECS=1)', async () => {
    const controller = new AbortController();
    const res = await fetch(sseUrl(small.httpUrl, [uniqueTopic('sse-raw')], { apikey: anonToken() }), {
      signal: controller.signal,
    });
    try {
      assert.equal(res.status, 200);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let text = '';
      await waitFor(
        async () => {
          const { value, done } = await reader.read();
          if (done) throw new Error(`stream ended: ${JSON.stringify(text)}`);
          text += decoder.decode(value, { stream: true });
          return (text.match(/^: ping$/gm) ?? []).length >= 2;
        },
        5000,
        () => `two ": ping" comments; got ${JSON.stringify(text)}`,
      );
      assert.match(text, /^retry: 2000\n/, JSON.stringify(text));
      assert.match(text, /^id: \S+$/m, JSON.stringify(text));
    } finally {
      controller.abort();
    }
  });

  test('HTTP/2 cleartext with prior knowledge: a published message arrives on the stream', async () => {
    const topic = uniqueTopic('sse-h2');
    const session = h2connect(server.httpUrl);
    session.on('error', () => {});
    try {
      const req = session.request({ ':path': `/sse?topic=${topic}&apikey=${anonToken()}`, accept: 'text/event-stream' });
      req.setEncoding('utf8');
      let text = '';
      req.on('data', (chunk) => {
        text += chunk;
      });
      const headers = await waitFor(new Promise((resolve, reject) => {
        req.once('response', resolve);
        req.once('error', reject);
      }), 5000, 'HTTP/2 response headers');
      assert.equal(headers[':status'], 200);
      assert.match(headers['content-type'], /^text\/event-stream/);
      await publish(server, { topic, event: 'h2', payload: { n: 1, via: 'h2c' } });
      await waitFor(() => /\nid: \S+\n\n/.test(text.slice(text.indexOf('event: broadcast'))) && text.includes('event: broadcast'), 5000, () => `a broadcast over h2; got ${JSON.stringify(text)}`);
      const block = text.slice(text.indexOf('event: broadcast')).split('\n\n')[0];
      const data = JSON.parse(block.split('\n').find((l) => l.startsWith('data: ')).slice(6));
      assert.equal(data.topic, topic);
      assert.equal(data.event, 'h2');
      assert.deepEqual(data.payload, { n: 1, via: 'h2c' });
      assert.equal(data.meta.offset, 1);
      req.close();
    } finally {
      session.destroy();
    }
  });
});
