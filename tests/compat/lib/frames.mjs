// Records and decodes the WebSocket frames a realtime-js client exchanges, so tests can assert on
// the wire (e.g. phx_close refs) and failures can show exactly what the server sent.
import WebSocket from 'ws';

const MAX_FRAMES = 2000;

/** A `ws` WebSocket subclass that appends every frame sent and received to `frames`. */
export function tappedTransport(frames) {
  const record = (dir, data) => {
    if (frames.length >= MAX_FRAMES) frames.shift();
    if (typeof data === 'string') frames.push({ dir, at: Date.now(), text: data });
    else frames.push({ dir, at: Date.now(), binary: toBytes(data) });
  };
  return class TappedWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      this.addEventListener('message', (event) => record('in', event.data));
    }

    send(data, ...rest) {
      record('out', data);
      return super.send(data, ...rest);
    }
  };
}

export function toBytes(data) {
  if (data instanceof Uint8Array) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (Array.isArray(data)) return new Uint8Array(Buffer.concat(data));
  return new Uint8Array(Buffer.from(String(data)));
}

const utf8 = new TextDecoder();

/**
 * Decodes one recorded frame into { join_ref, ref, topic, event, payload } (text frames of either
 * vsn) or { kind, topic, event, meta, encoding, payload, ... } (binary kinds 3 and 4).
 */
export function decodeFrame(frame) {
  if (frame.text !== undefined) {
    const value = JSON.parse(frame.text);
    if (Array.isArray(value)) {
      const [join_ref, ref, topic, event, payload] = value;
      return { join_ref, ref, topic, event, payload };
    }
    return { join_ref: value.join_ref ?? null, ref: value.ref ?? null, ...value };
  }
  const b = frame.binary;
  const kind = b[0];
  const str = (from, len) => utf8.decode(b.subarray(from, from + len));
  if (kind === 4) {
    const [t, e, m, encoding] = [b[1], b[2], b[3], b[4]];
    let o = 5;
    const topic = str(o, t);
    const event = str((o += t), e);
    const meta = str((o += e), m);
    o += m;
    return { kind, topic, event: 'broadcast', userEvent: event, meta, encoding, payload: b.subarray(o) };
  }
  if (kind === 3) {
    const [j, r, t, e, m, encoding] = [b[1], b[2], b[3], b[4], b[5], b[6]];
    let o = 7;
    const join_ref = str(o, j);
    const ref = str((o += j), r);
    const topic = str((o += r), t);
    const event = str((o += t), e);
    const meta = str((o += e), m);
    o += m;
    return { kind, join_ref, ref, topic, event: 'broadcast', userEvent: event, meta, encoding, payload: b.subarray(o) };
  }
  return { kind, bytes: b };
}

function describeFrame(frame) {
  if (frame.text !== undefined) {
    const text = frame.text.length > 300 ? `${frame.text.slice(0, 300)}…` : frame.text;
    return `text ${text}`;
  }
  const hex = Buffer.from(frame.binary.subarray(0, 96)).toString('hex');
  return `binary(${frame.binary.length}) ${hex}${frame.binary.length > 96 ? '…' : ''}`;
}

/** The last `n` frames, one per line, for failure messages. */
export function formatFrames(frames, n = 25) {
  if (!frames || frames.length === 0) return '  (no frames)';
  return frames
    .slice(-n)
    .map((f) => `  ${f.dir === 'in' ? '<-' : '->'} ${describeFrame(f)}`)
    .join('\n');
}
