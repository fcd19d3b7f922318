// A loopback TCP proxy to 127.0.0.1:`targetPort` that tests use to kill the transport mid-stream:
// - break(): destroys both sides of every open connection (each peer sees it die at once);
// - cut(): stops forwarding on every open connection without closing it (a silent network path,
//   which only heartbeats detect); cut connections are destroyed on close();
// - mute(): stops forwarding what the server sends on every open connection, while what the client
//   sends still gets through (replies lost on the way back);
// - hold() / release(): new connections wait, unforwarded, until release(), so a test can publish
//   while the client is certainly disconnected.
import { connect, createServer } from 'node:net';
import { waitFor } from './wait.mjs';

export async function startProxy(targetPort) {
  const connections = [];
  const waiting = [];
  let holding = false;

  const forward = (conn) => {
    const { client } = conn;
    const upstream = connect(targetPort, '127.0.0.1');
    conn.upstream = upstream;
    upstream.setNoDelay(true);
    upstream.on('error', () => {});
    for (const chunk of conn.early) upstream.write(chunk);
    conn.early = null;
    client.on('data', (chunk) => {
      if (!conn.cut) upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!conn.cut && !conn.muted && !client.destroyed) client.write(chunk);
    });
    client.on('end', () => {
      if (!conn.cut) upstream.end();
    });
    upstream.on('end', () => {
      if (!conn.cut) client.end();
    });
    client.on('close', () => {
      if (!conn.cut) upstream.destroy();
    });
    upstream.on('close', () => {
      if (!conn.cut) client.destroy();
    });
  };

  const server = createServer((client) => {
    const conn = { client, upstream: null, early: [], cut: false, muted: false, closed: false };
    connections.push(conn);
    client.setNoDelay(true);
    client.on('error', () => {});
    client.on('close', () => {
      conn.closed = true;
    });
    client.on('data', (chunk) => {
      if (conn.early) conn.early.push(chunk);
    });
    if (holding) waiting.push(conn);
    else forward(conn);
  });
  await waitFor(
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    }),
    5000,
    'the proxy to listen',
  );
  return {
    port: server.address().port,
    connections,
    open: () => connections.filter((c) => !c.closed && !c.cut),
    break() {
      let n = 0;
      for (const c of connections) {
        if (c.closed || c.cut) continue;
        n += 1;
        c.client.destroy();
        c.upstream?.destroy();
      }
      return n;
    },
    cut() {
      let n = 0;
      for (const c of connections) {
        if (c.closed || c.cut) continue;
        n += 1;
        c.cut = true;
      }
      return n;
    },
    mute() {
      let n = 0;
      for (const c of connections) {
        if (c.closed || c.cut || c.muted) continue;
        n += 1;
        c.muted = true;
      }
      return n;
    },
    hold() {
      holding = true;
    },
    release() {
      holding = false;
      for (const conn of waiting.splice(0)) if (!conn.client.destroyed) forward(conn);
    },
    async close() {
      for (const c of connections) {
        c.client.destroy();
        c.upstream?.destroy();
      }
      if (server.listening) await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
