// HTTP broadcast API reaching realtime-js subscribers on vsn 1.0.0 and 2.0.0: the batch endpoint,
// the single-message endpoint (JSON and raw bytes), both URL prefixes, auth and content types,
// plus the client's own REST paths (httpSend() and send() before subscribing).
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { assertBinaryBroadcast, assertBroadcast, everyByte, RICH_PAYLOAD } from './lib/assertions.mjs';
import { disconnectAll, listen, makeClient, nextBroadcast, subscribed, uniqueTopic, VSNS } from './lib/client.mjs';
import { startHerald } from './lib/herald.mjs';
import { batch, post } from './lib/http.mjs';
import { anonToken, expiredToken, forgedToken, serviceToken } from './lib/tokens.mjs';

let server;
before(async () => {
  server = await startHerald();
});
afterEach(disconnectAll);
after(async () => server?.stop());

/** One subscriber per vsn on `topic`. */
async function subscribers(topic) {
  const all = {};
  for (const vsn of VSNS) {
    const client = makeClient(server, { vsn });
    const channel = client.channel(topic);
    const inbox = listen(channel);
    await subscribed(channel);
    all[vsn] = { client, channel, inbox };
  }
  return all;
}

const single = (topic, event, prefix = '') =>
  `${prefix}/api/broadcast/${encodeURIComponent(topic)}/events/${encodeURIComponent(event)}`;

describe('POST /api/broadcast (batch)', () => {
  for (const prefix of ['', '/realtime/v1']) {
    test(`${prefix}/api/broadcast answers 202 with an empty body and reaches both vsn`, async () => {
      const topic = uniqueTopic();
      const subs = await subscribers(topic);

      const res = await post(server, `${prefix}/api/broadcast`, {
        token: serviceToken(),
        json: batch({ topic, event: 'batched', payload: RICH_PAYLOAD }),
      });
      assert.equal(res.status, 202, `status ${res.status}: ${res.text}`);
      assert.equal(res.text, '');
      for (const vsn of VSNS) {
        assertBroadcast(await nextBroadcast(subs[vsn].inbox, subs[vsn].client), 'batched', RICH_PAYLOAD);
      }
    });
  }

  test('several messages in one batch arrive in order, each on its own topic', async () => {
    const topic = uniqueTopic();
    const other = uniqueTopic();
    const subs = await subscribers(topic);
    const others = await subscribers(other);

    const res = await post(server, '/api/broadcast', {
      token: serviceToken(),
      json: batch(
        { topic, event: 'first', payload: { i: 1 } },
        { topic: other, event: 'elsewhere', payload: { i: 2 } },
        { topic, event: 'second', payload: { i: 3 } },
      ),
    });
    assert.equal(res.status, 202, res.text);
    for (const vsn of VSNS) {
      const { inbox, client } = subs[vsn];
      assertBroadcast(await nextBroadcast(inbox, client), 'first', { i: 1 });
      assertBroadcast(await nextBroadcast(inbox, client), 'second', { i: 3 });
      assertBroadcast(await nextBroadcast(others[vsn].inbox, others[vsn].client), 'elsewhere', { i: 2 });
    }
  });

  test('the apikey header authenticates too', async () => {
    const topic = uniqueTopic();
    const subs = await subscribers(topic);
    const res = await post(server, '/api/broadcast', {
      headers: { apikey: serviceToken() },
      json: batch({ topic, event: 'via-apikey', payload: { ok: true } }),
    });
    assert.equal(res.status, 202, res.text);
    assertBroadcast(await nextBroadcast(subs['2.0.0'].inbox, subs['2.0.0'].client), 'via-apikey', { ok: true });
  });

  test('an oversize message gets 422 and is not delivered', async () => {
    const topic = uniqueTopic();
    const subs = await subscribers(topic);
    const res = await post(server, '/api/broadcast', {
      token: serviceToken(),
      json: batch({ topic, event: 'huge', payload: { blob: 'x'.repeat(300_000) } }),
    });
    assert.equal(res.status, 422, res.text.slice(0, 300));
    assert.equal(typeof res.json?.errors, 'object', res.text.slice(0, 300));

    const ok = await post(server, '/api/broadcast', {
      token: serviceToken(),
      json: batch({ topic, event: 'small', payload: { n: 1 } }),
    });
    assert.equal(ok.status, 202, ok.text);
    for (const vsn of VSNS) {
      assertBroadcast(await nextBroadcast(subs[vsn].inbox, subs[vsn].client), 'small', { n: 1 });
    }
  });

  for (const [name, headers] of [
    ['no token', {}],
    ['a forged token', { authorization: `Bearer ${forgedToken()}` }],
    ['an expired token', { authorization: `Bearer ${expiredToken()}` }],
  ]) {
    test(`${name} gets 401 {"message":"Unauthorized"}`, async () => {
      const res = await post(server, '/api/broadcast', {
        headers,
        json: batch({ topic: uniqueTopic(), event: 'x', payload: {} }),
      });
      assert.equal(res.status, 401, res.text);
      assert.deepEqual(res.json, { message: 'Unauthorized' });
    });
  }
});

describe('POST /api/broadcast/<topic>/events/<event> (single)', () => {
  for (const prefix of ['', '/realtime/v1']) {
    test(`${prefix} JSON body answers 202 and reaches both vsn`, async () => {
      const topic = uniqueTopic();
      const subs = await subscribers(topic);

      const res = await post(server, single(topic, 'one', prefix), { token: serviceToken(), json: RICH_PAYLOAD });
      assert.equal(res.status, 202, `status ${res.status}: ${res.text}`);
      for (const vsn of VSNS) {
        assertBroadcast(await nextBroadcast(subs[vsn].inbox, subs[vsn].client), 'one', RICH_PAYLOAD);
      }
    });
  }

  test('application/octet-stream reaches 2.0.0 as identical bytes and is not sent to 1.0.0', async () => {
    const topic = uniqueTopic();
    const subs = await subscribers(topic);
    const bytes = everyByte();

    const bin = await post(server, single(topic, 'raw'), {
      token: serviceToken(),
      body: bytes,
      contentType: 'application/octet-stream',
    });
    assert.equal(bin.status, 202, bin.text);
    const marker = await post(server, single(topic, 'marker'), { token: serviceToken(), json: { after: 'raw' } });
    assert.equal(marker.status, 202, marker.text);

    const v2 = subs['2.0.0'];
    assertBinaryBroadcast(await nextBroadcast(v2.inbox, v2.client), 'raw', bytes);
    assertBroadcast(await nextBroadcast(v2.inbox, v2.client), 'marker', { after: 'raw' });
    const v1 = subs['1.0.0'];
    assertBroadcast(await nextBroadcast(v1.inbox, v1.client), 'marker', { after: 'raw' });
  });

  test('an unsupported content type gets 415', async () => {
    const res = await post(server, single(uniqueTopic(), 'txt'), {
      token: serviceToken(),
      body: 'plain words',
      contentType: 'text/plain',
    });
    assert.equal(res.status, 415, res.text);
  });

  test('no token gets 401 {"message":"Unauthorized"}', async () => {
    const res = await post(server, single(uniqueTopic(), 'x'), { json: { a: 1 } });
    assert.equal(res.status, 401, res.text);
    assert.deepEqual(res.json, { message: 'Unauthorized' });
  });
});

describe("the client's own REST paths", () => {
  for (const vsn of VSNS) {
    test(`channel.httpSend() from a ${vsn} client reaches subscribers`, async () => {
      const topic = uniqueTopic();
      const subs = await subscribers(topic);
      const sender = makeClient(server, { vsn, token: anonToken() });

      const result = await sender.channel(topic).httpSend('http-send', { via: 'httpSend' });
      assert.deepEqual(result, { success: true });
      for (const v of VSNS) {
        assertBroadcast(await nextBroadcast(subs[v].inbox, subs[v].client), 'http-send', { via: 'httpSend' });
      }
    });
  }

  test('channel.httpSend() with an ArrayBuffer reaches a 2.0.0 subscriber as bytes', async () => {
    const topic = uniqueTopic();
    const subs = await subscribers(topic);
    const sender = makeClient(server, { vsn: '2.0.0' });
    const bytes = everyByte();

    assert.deepEqual(await sender.channel(topic).httpSend('http-bin', bytes.slice().buffer), { success: true });
    assertBinaryBroadcast(await nextBroadcast(subs['2.0.0'].inbox, subs['2.0.0'].client), 'http-bin', bytes);
  });

  test("send() on a channel that is not subscribed falls back to the batch endpoint and resolves 'ok'", async () => {
    const topic = uniqueTopic();
    const subs = await subscribers(topic);
    const sender = makeClient(server, { vsn: '2.0.0' });

    const status = await sender.channel(topic).send({ type: 'broadcast', event: 'fallback', payload: { rest: 1 } });
    assert.equal(status, 'ok');
    for (const vsn of VSNS) {
      assertBroadcast(await nextBroadcast(subs[vsn].inbox, subs[vsn].client), 'fallback', { rest: 1 });
    }
  });
});
