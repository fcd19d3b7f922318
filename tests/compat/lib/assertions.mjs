// Shared assertions on what realtime-js hands to broadcast listeners.
import assert from 'node:assert/strict';

/** `message` is a JSON broadcast of `event` carrying `payload` (any `meta` is ignored). */
export function assertBroadcast(message, event, payload) {
  assert.equal(message?.type, 'broadcast', `not a broadcast: ${JSON.stringify(message)}`);
  assert.equal(message.event, event, `unexpected broadcast: ${JSON.stringify(message)}`);
  assert.deepEqual(message.payload, payload);
}

/** `message` is a binary broadcast of `event` whose payload is an ArrayBuffer equal to `bytes`. */
export function assertBinaryBroadcast(message, event, bytes) {
  assert.equal(message?.type, 'broadcast', `not a broadcast: ${JSON.stringify(message)}`);
  assert.equal(message.event, event, `unexpected broadcast: ${JSON.stringify(message)}`);
  assert.ok(
    message.payload instanceof ArrayBuffer,
    `payload should be an ArrayBuffer, got ${Object.prototype.toString.call(message.payload)}: ${JSON.stringify(message.payload)}`,
  );
  assert.deepEqual(
    Buffer.from(message.payload).toString('hex'),
    Buffer.from(bytes).toString('hex'),
    'binary payload bytes differ',
  );
}

/** 256 bytes covering every byte value, which is not valid UTF-8 as a whole. */
export function everyByte() {
  const bytes = new Uint8Array(256);
  for (let i = 0; i < 256; i += 1) bytes[i] = (i * 7 + 3) % 256;
  return bytes;
}

/** A payload exercising JSON fidelity: unicode, numbers, nesting, null. */
export const RICH_PAYLOAD = Object.freeze({
  text: 'héllo wörld ✓ 🚀 — "quoted" \\ back\nslash',
  int: 42,
  float: -1.5,
  big: 9007199254740991,
  flag: true,
  none: null,
  list: [1, 'two', { three: 3 }, [], {}],
});
