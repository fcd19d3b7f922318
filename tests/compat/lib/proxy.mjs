// A loopback TCP proxy (node:net) that can "cut" its connections: after cut() nothing is forwarded
// in either direction, and neither side is closed or reset by the proxy, so each peer sees a live
// but silent connection, as when a network path dies without a FIN or RST. Closes that happen
// after the cut are recorded and not passed on.
import { connect, createServer } from 'node:net';
import { waitFor } from './wait.mjs';

/**
 * Listens on a free loopback port and forwards every connection to 127.0.0.1:`targetPort`.
 * Returns { port, connections, cut(), close() }. Each connection records
 * { cutAt, clientClosedAt, upstreamClosedAt } (Date.now() values or null).
 */
export async function startProxy(targetPort) {
  const connections = [];
  const sockets = new Set();
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    const conn = { cutAt: null, clientClosedAt: null, upstreamClosedAt: null, client, upstream };
    connections.push(conn);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => {});
    }
    const forward = (from, to) => {
      from.on('data', (chunk) => {
        if (conn.cutAt === null && !to.destroyed) to.write(chunk);
      });
      from.on('end', () => {
        if (conn.cutAt === null) to.end();
      });
    };
    forward(client, upstream);
    forward(upstream, client);
    client.on('close', () => {
      conn.clientClosedAt = Date.now();
      sockets.delete(client);
      if (conn.cutAt === null) upstream.destroy();
    });
    upstream.on('close', () => {
      conn.upstreamClosedAt = Date.now();
      sockets.delete(upstream);
      if (conn.cutAt === null) client.destroy();
    });
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
    /** Stops forwarding on every open connection, keeping both sockets open. */
    cut() {
      const at = Date.now();
      for (const conn of connections) if (conn.cutAt === null) conn.cutAt = at;
      return at;
    },
    /** Destroys every socket and stops listening; safe to call more than once. */
    async close() {
      for (const s of sockets) s.destroy();
      if (server.listening) await new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
