// A loopback TCP proxy (node:net) in front of Herald, so that a test can really cut one browser
// context's connections: Chromium's offline emulation fails new requests but leaves an open
// WebSocket or EventSource alone. cut() destroys every open connection (both sides) and refuses
// new ones until restore().
import { connect, createServer } from 'node:net';

/** Listens on a free loopback port and forwards every connection to 127.0.0.1:`targetPort`. */
export async function startProxy(targetPort) {
  const sockets = new Set();
  let accepting = true;
  let accepted = 0;
  let refused = 0;
  const server = createServer((client) => {
    client.on('error', () => {});
    if (!accepting) {
      refused += 1;
      client.destroy();
      return;
    }
    accepted += 1;
    const upstream = connect(targetPort, '127.0.0.1');
    upstream.on('error', () => {});
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    get accepted() {
      return accepted;
    },
    get refused() {
      return refused;
    },
    /** Destroys every open connection and refuses new ones; returns how many sockets were open. */
    cut() {
      accepting = false;
      const n = sockets.size;
      for (const s of sockets) s.destroy();
      return n;
    },
    /** Accepts connections again. */
    restore() {
      accepting = true;
    },
    async close() {
      accepting = false;
      for (const s of sockets) s.destroy();
      if (server.listening) await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
