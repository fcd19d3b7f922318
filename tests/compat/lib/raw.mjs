// Raw WebSocket access (the `ws` package, no realtime-js): handshake refusals with their HTTP
// status and body, and a minimal Phoenix-frame socket for wire-level checks.
import WebSocket from 'ws';
import { decodeFrame, formatFrames, toBytes } from './frames.mjs';
import { Inbox, waitFor } from './wait.mjs';

/**
 * Attempts a WebSocket upgrade. Resolves { opened: true } if it succeeded (the socket is closed
 * again) or { opened: false, status, body, json } if the server refused it.
 */
export function tryHandshake(url, { headers = {}, ms = 5000 } = {}) {
  const attempt = new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on('open', () => {
      ws.close();
      resolve({ opened: true });
    });
    ws.on('unexpected-response', (req, res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        resolve({ opened: false, status: res.statusCode, body, json, headers: res.headers });
        req.destroy();
      });
    });
    ws.on('error', (err) => reject(err));
  });
  return waitFor(attempt, ms, `handshake response from ${url}`);
}

/** A bare Phoenix-protocol socket: send() frames, await decoded frames from `inbox`. */
export class RawSocket {
  static async open(url, ms = 5000) {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const raw = new RawSocket(ws);
    await waitFor(
      new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
        ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
      }),
      ms,
      `raw socket open to ${url}`,
    );
    return raw;
  }

  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.inbox = new Inbox('raw frames');
    this.closed = null;
    ws.on('message', (data, isBinary) => {
      const frame = isBinary
        ? { dir: 'in', at: Date.now(), binary: toBytes(data) }
        : { dir: 'in', at: Date.now(), text: data.toString('utf8') };
      this.frames.push(frame);
      this.inbox.push(decodeFrame(frame));
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
  }

  /** Sends a frame: arrays/objects as JSON text, buffers as binary. */
  send(frame) {
    if (frame instanceof Uint8Array || frame instanceof ArrayBuffer) {
      this.frames.push({ dir: 'out', at: Date.now(), binary: toBytes(frame) });
      this.ws.send(frame);
    } else {
      const text = typeof frame === 'string' ? frame : JSON.stringify(frame);
      this.frames.push({ dir: 'out', at: Date.now(), text });
      this.ws.send(text);
    }
  }

  /** The first received frame (taken or not) matching `predicate`. */
  expect(predicate, ms, label) {
    return this.inbox.find(predicate, ms, () => `${label}; frames:\n${formatFrames(this.frames)}`);
  }

  close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate();
    }
  }
}
