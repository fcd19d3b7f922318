// Wire-level clients: HTTP/1.1 requests through node:http (no connection reuse), raw TCP exchanges
// for malformed and pipelined requests, and a raw WebSocket client that writes any frame it is told
// to (unmasked, reserved bits, lying lengths, invalid UTF-8) and reads the server's frames.
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';

/**
 * One HTTP/1.1 request. `body` (string or Buffer) is sent whole; `json` sets application/json.
 * Resolves { status, headers, text, json, ms }; rejects after `ms` milliseconds.
 */
export function http(server, path, { method = 'GET', headers = {}, body, json, localAddress, ms = 10_000 } = {}) {
  const h = { ...headers };
  let payload = body;
  if (json !== undefined) {
    payload = JSON.stringify(json);
    h['content-type'] ??= 'application/json';
  }
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: server.port, path, method, headers: h, agent: false, localAddress, timeout: ms },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json: parsed, ms: Date.now() - started });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer to ${method} ${path} within ${ms} ms`)));
    req.on('error', reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

/** Short text of a response for outcome lines. */
export function brief(res, n = 160) {
  const text = (res.text ?? '').replace(/\s+/g, ' ');
  return `${res.status} ${text.length > n ? `${text.slice(0, n)}…` : text}`;
}

/**
 * A raw TCP connection to the server: write bytes, watch what comes back and whether the server
 * closes. `localAddress` picks the loopback source address (127.0.0.x).
 */
export async function rawConnect(server, { localAddress, ms = 5000 } = {}) {
  const socket = connect({ host: '127.0.0.1', port: server.port, localAddress });
  const conn = {
    socket,
    data: Buffer.alloc(0),
    closed: false,
    closedAt: null,
    openedAt: Date.now(),
    error: null,
    listeners: new Set(),
  };
  const notify = () => conn.listeners.forEach((f) => f());
  socket.on('data', (d) => {
    conn.data = Buffer.concat([conn.data, d]);
    notify();
  });
  socket.on('error', (e) => {
    conn.error = e;
  });
  socket.on('close', () => {
    conn.closed = true;
    conn.closedAt = Date.now();
    notify();
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`TCP connect not done within ${ms} ms`)), ms);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  conn.openedAt = Date.now();
  /** Resolves once `pred(conn)` holds (checked on every byte and on close); false after `ms`. */
  conn.until = (pred, waitMs) =>
    new Promise((resolve) => {
      if (pred(conn)) return resolve(true);
      const check = () => {
        if (pred(conn)) {
          done(true);
        }
      };
      const timer = setTimeout(() => done(false), waitMs);
      function done(v) {
        clearTimeout(timer);
        conn.listeners.delete(check);
        resolve(v);
      }
      conn.listeners.add(check);
    });
  conn.write = (bytes) =>
    new Promise((resolve) => {
      if (conn.closed || socket.destroyed) return resolve(false);
      socket.write(bytes, (err) => resolve(!err));
    });
  conn.waitClosed = (waitMs) => conn.until((c) => c.closed, waitMs);
  conn.text = () => conn.data.toString('latin1');
  conn.destroy = () => socket.destroy();
  return conn;
}

/**
 * Parses the HTTP/1.1 responses at the start of `buf` (pipelined ones in order). Bodies framed by
 * Content-Length or chunked encoding; a response without either takes the rest.
 */
export function parseResponses(buf) {
  const out = [];
  let at = 0;
  while (at < buf.length) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const head = buf.subarray(at, end).toString('latin1').split('\r\n');
    const [, status] = head[0].match(/^HTTP\/1\.[01] (\d{3})/) ?? [];
    const headers = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    let bodyStart = end + 4;
    let body;
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (bodyStart + n > buf.length) break;
      body = buf.subarray(bodyStart, bodyStart + n);
      at = bodyStart + n;
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts = [];
      let p = bodyStart;
      let complete = false;
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', p);
        if (lineEnd < 0) break;
        const size = parseInt(buf.subarray(p, lineEnd).toString('latin1'), 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          const trailerEnd = buf.indexOf('\r\n', lineEnd + 2);
          if (trailerEnd < 0) break;
          p = trailerEnd + 2;
          complete = true;
          break;
        }
        if (lineEnd + 2 + size + 2 > buf.length) break;
        parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        p = lineEnd + 2 + size + 2;
      }
      if (!complete) break;
      body = Buffer.concat(parts);
      at = p;
    } else if (/^(1\d\d|204|304)$/.test(status ?? '')) {
      body = Buffer.alloc(0);
      at = bodyStart;
    } else {
      body = buf.subarray(bodyStart);
      at = buf.length;
    }
    out.push({ status: Number(status), headers, text: body.toString('utf8') });
  }
  return out;
}

/** A minimal request head. */
export function head(method, path, headers = {}) {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Builds one WebSocket frame as a client would (masked unless `mask: false`). */
export function wsFrame(opcode, payload = Buffer.alloc(0), { fin = true, mask = true, rsv = 0, claimedLength } = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = claimedLength ?? data.length;
  const parts = [Buffer.from([(fin ? 0x80 : 0) | (rsv << 4) | opcode])];
  const m = mask ? 0x80 : 0;
  if (len < 126) parts.push(Buffer.from([m | len]));
  else if (len < 65536) {
    const b = Buffer.alloc(3);
    b[0] = m | 126;
    b.writeUInt16BE(len, 1);
    parts.push(b);
  } else {
    const b = Buffer.alloc(9);
    b[0] = m | 127;
    b.writeBigUInt64BE(BigInt(len), 1);
    parts.push(b);
  }
  if (mask) {
    const key = randomBytes(4);
    const masked = Buffer.alloc(data.length);
    for (let i = 0; i < data.length; i++) masked[i] = data[i] ^ key[i & 3];
    parts.push(key, masked);
  } else parts.push(data);
  return Buffer.concat(parts);
}

/** Parses the (unmasked) server frames in `buf`: [{ opcode, payload, fin }], plus the close code if any. */
export function parseServerFrames(buf) {
  const frames = [];
  let at = 0;
  while (at + 2 <= buf.length) {
    const b0 = buf[at];
    let len = buf[at + 1] & 0x7f;
    let p = at + 2;
    if (len === 126) {
      if (p + 2 > buf.length) break;
      len = buf.readUInt16BE(p);
      p += 2;
    } else if (len === 127) {
      if (p + 8 > buf.length) break;
      len = Number(buf.readBigUInt64BE(p));
      p += 8;
    }
    if (p + len > buf.length) break;
    frames.push({ opcode: b0 & 0x0f, fin: !!(b0 & 0x80), payload: buf.subarray(p, p + len) });
    at = p + len;
  }
  const close = frames.find((f) => f.opcode === 8);
  return { frames, closeCode: close && close.payload.length >= 2 ? close.payload.readUInt16BE(0) : undefined };
}

/**
 * Opens a WebSocket with a raw TCP handshake. Resolves the raw connection (see rawConnect) with
 * sendFrame(opcode, payload, opts), serverFrames() and waitCloseCode(ms).
 */
export async function rawWebSocket(server, token, { vsn = '2.0.0', localAddress, ms = 5000 } = {}) {
  const conn = await rawConnect(server, { localAddress, ms });
  const key = randomBytes(16).toString('base64');
  await conn.write(
    head('GET', `/realtime/v1/websocket?apikey=${token}&vsn=${vsn}`, {
      Upgrade: 'websocket',
      Connection: 'Upgrade',
      'Sec-WebSocket-Key': key,
      'Sec-WebSocket-Version': '13',
    }),
  );
  const ok = await conn.until((c) => c.data.indexOf('\r\n\r\n') >= 0 || c.closed, ms);
  const end = conn.data.indexOf('\r\n\r\n');
  const status = conn.data.subarray(0, 12).toString('latin1');
  if (!ok || end < 0 || !status.includes(' 101')) {
    conn.destroy();
    throw new Error(`raw WebSocket handshake failed: ${conn.text().slice(0, 200)}`);
  }
  const headLen = end + 4;
  conn.frameBytes = () => conn.data.subarray(headLen);
  conn.serverFrames = () => parseServerFrames(conn.frameBytes());
  conn.sendFrame = (opcode, payload, opts) => conn.write(wsFrame(opcode, payload, opts));
  /** Resolves { code, closed, ms } once the server sent a close frame or dropped the connection. */
  conn.waitCloseCode = async (waitMs) => {
    const started = Date.now();
    await conn.until((c) => c.closed || c.serverFrames().closeCode !== undefined, waitMs);
    return { code: conn.serverFrames().closeCode, closed: conn.closed, ms: Date.now() - started };
  };
  return conn;
}

/**
 * Opens GET /sse?<query> with node:http. Resolves { status, headers, text(), close() } once the
 * response head (and, for a refusal, its body) arrived; the stream stays open until close().
 */
export function sse(server, query, { headers = {}, localAddress, ms = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port: server.port, path: `/sse?${query}`, headers, agent: false, localAddress, timeout: ms },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        const result = {
          status: res.statusCode,
          headers: res.headers,
          text: () => body,
          close: () => req.destroy(),
          ended: false,
        };
        res.on('data', (c) => {
          body += c;
        });
        res.on('error', () => {});
        res.on('end', () => {
          result.ended = true;
          if (res.statusCode !== 200) resolve(result);
        });
        if (res.statusCode === 200) {
          req.setTimeout(0);
          resolve(result);
        }
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer to /sse within ${ms} ms`)));
    req.on('error', reject);
    req.end();
  });
}
