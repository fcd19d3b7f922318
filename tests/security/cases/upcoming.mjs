// Caps that bound what one client address, or the whole node, may hold: max_connections_per_ip
// (WebSocket and SSE together), trusted_proxies (X-Forwarded-For honoured only from them) and
// max_channels (distinct live channels on the node).
import { anon, must, reasonOf, uniq } from '../lib/check.mjs';
import { http, sse } from '../lib/net.mjs';
import { Phx } from '../lib/phoenix.mjs';

const PER_IP = 'max_connections_per_ip';

/** Opens WebSockets from `localAddress` (each with `xff(i)` as X-Forwarded-For when given). */
async function openFrom(srv, n, localAddress, xff) {
  const socks = [];
  for (let i = 0; i < n; i++) {
    const headers = xff ? { 'x-forwarded-for': xff(i) } : {};
    socks.push(await Phx.open(srv, anon(srv), { localAddress, headers }));
  }
  return socks;
}

/** The next handshake from `localAddress` must be refused with 429 naming max_connections_per_ip. */
async function refusedPerIp(srv, localAddress, headers = {}, label = 'next handshake') {
  const r = await Phx.refusal(srv, anon(srv), { localAddress, headers });
  must(!r.opened, `${label}: opened (no per-address cap)`);
  must(r.status === 429 && r.body.includes(PER_IP), `${label}: ${r.status} ${r.body}`);
  return r;
}

/** Runs `fn(held)` and closes every socket it collected. */
async function holding(fn) {
  const held = [];
  try {
    return await fn(held);
  } finally {
    held.forEach((s) => (s.close ? s.close() : null));
  }
}

export default [
  {
    name: 'per-ip-cap-websocket',
    server: 'caps',
    short: true,
    upcoming: 'max_connections_per_ip',
    expect: 'with max_connections_per_ip = 4, the 5th WebSocket from one address gets 429 naming max_connections_per_ip; closing one frees a slot',
    run: async ({ srv }) =>
      holding(async (held) => {
        const addr = '127.0.0.31';
        held.push(...(await openFrom(srv, 4, addr)));
        const r = await refusedPerIp(srv, addr);
        held.shift().close();
        let again;
        for (let i = 0; i < 50 && !again?.opened; i++) again = await Phx.refusal(srv, anon(srv), { localAddress: addr });
        must(again?.opened, `after closing one: ${JSON.stringify(again)}`);
        return `5th: 429 ${r.body.slice(0, 80)}; slot freed`;
      }),
  },
  {
    name: 'per-ip-cap-sse',
    server: 'caps',
    short: true,
    upcoming: 'max_connections_per_ip',
    expect: 'WebSocket and SSE count together: after 2 sockets and 2 streams from one address, a 3rd stream and a 3rd socket get 429 naming max_connections_per_ip',
    run: async ({ srv }) =>
      holding(async (held) => {
        const addr = '127.0.0.32';
        held.push(...(await openFrom(srv, 2, addr)));
        for (let i = 0; i < 2; i++) {
          const s = await sse(srv, `topic=${uniq('ipsse')}&apikey=${anon(srv)}`, { localAddress: addr });
          held.push(s);
          must(s.status === 200, `stream ${i + 1}: ${s.status} ${s.text()}`);
        }
        const s = await sse(srv, `topic=${uniq('ipsse')}&apikey=${anon(srv)}`, { localAddress: addr });
        held.push(s);
        must(s.status === 429 && s.text().includes(PER_IP), `5th (SSE): ${s.status} ${s.text().slice(0, 120)}`);
        await refusedPerIp(srv, addr, {}, '5th (WebSocket)');
        return 'SSE 429 and WebSocket 429 at 4 connections';
      }),
  },
  {
    name: 'per-ip-cap-other-address-admitted',
    server: 'caps',
    upcoming: 'max_connections_per_ip',
    expect: 'while one address is at its cap (its 5th refused), another address still connects',
    run: async ({ srv }) =>
      holding(async (held) => {
        held.push(...(await openFrom(srv, 4, '127.0.0.33')));
        await refusedPerIp(srv, '127.0.0.33');
        const other = await Phx.open(srv, anon(srv), { localAddress: '127.0.0.34' });
        held.push(other);
        must(await other.heartbeat(), 'the other address cannot use its socket');
        return '127.0.0.33 refused at 5, 127.0.0.34 admitted';
      }),
  },
  {
    name: 'per-ip-cap-ignores-xff-without-trusted-proxies',
    server: 'caps',
    short: true,
    upcoming: 'max_connections_per_ip',
    expect: 'without trusted_proxies, a client sending a different X-Forwarded-For on each connection is still capped at 4 by its own address',
    run: async ({ srv }) =>
      holding(async (held) => {
        held.push(...(await openFrom(srv, 4, '127.0.0.35', (i) => `203.0.113.${i + 1}`)));
        await refusedPerIp(srv, '127.0.0.35', { 'x-forwarded-for': '203.0.113.99' });
        return '5th refused despite a fresh X-Forwarded-For';
      }),
  },
  {
    name: 'trusted-proxy-xff-counted',
    server: 'proxy',
    short: true,
    upcoming: 'trusted_proxies',
    expect: 'from the trusted proxy 127.0.0.1, X-Forwarded-For is the client: the 4th connection of client 10.1.1.1 gets 429 (cap 3), client 10.1.1.2 still connects',
    run: async ({ srv }) =>
      holding(async (held) => {
        held.push(...(await openFrom(srv, 3, '127.0.0.1', () => '10.1.1.1')));
        await refusedPerIp(srv, '127.0.0.1', { 'x-forwarded-for': '10.1.1.1' }, '4th of 10.1.1.1');
        held.push(await Phx.open(srv, anon(srv), { localAddress: '127.0.0.1', headers: { 'x-forwarded-for': '10.1.1.2' } }));
        return '10.1.1.1 refused at 4, 10.1.1.2 admitted';
      }),
  },
  {
    name: 'trusted-proxy-rightmost-untrusted-address',
    server: 'proxy',
    short: true,
    upcoming: 'trusted_proxies',
    expect: 'the client is the rightmost X-Forwarded-For address that is not a trusted proxy: spoofed left entries ("1.1.1.N, 10.3.3.3") all count as 10.3.3.3, and "10.4.4.4, 127.0.0.1" counts as 10.4.4.4',
    run: async ({ srv }) =>
      holding(async (held) => {
        held.push(...(await openFrom(srv, 3, '127.0.0.1', (i) => `1.1.1.${i + 1}, 10.3.3.3`)));
        await refusedPerIp(srv, '127.0.0.1', { 'x-forwarded-for': '1.1.1.77, 10.3.3.3' }, '4th of 10.3.3.3');
        held.push(...(await openFrom(srv, 3, '127.0.0.1', () => '10.4.4.4, 127.0.0.1')));
        await refusedPerIp(srv, '127.0.0.1', { 'x-forwarded-for': '10.4.4.4' }, '4th of 10.4.4.4');
        return 'spoofed prefixes ignored; trusted hop skipped';
      }),
  },
  {
    name: 'untrusted-peer-xff-ignored',
    server: 'proxy',
    short: true,
    upcoming: 'trusted_proxies',
    expect: 'from 127.0.0.36 (not a trusted proxy), X-Forwarded-For is ignored: a different value on each connection does not dodge the cap of 3',
    run: async ({ srv }) =>
      holding(async (held) => {
        held.push(...(await openFrom(srv, 3, '127.0.0.36', (i) => `10.9.9.${i + 1}`)));
        await refusedPerIp(srv, '127.0.0.36', { 'x-forwarded-for': '10.9.9.99' });
        return '4th refused: counted by the peer address';
      }),
  },
  {
    name: 'max-channels-per-node',
    server: 'caps',
    short: true,
    upcoming: 'max_channels',
    expect: 'with max_channels = 10, a join creating the 11th channel gets NodeChannelLimitReached: Too many channels on this node, and an SSE stream on a new topic 429 naming max_channels; an existing channel stays joinable on both',
    run: async ({ srv }) => {
      const phx = await Phx.open(srv, anon(srv), { localAddress: '127.0.0.37' });
      try {
        const existing = (await http(srv, '/healthz')).json.channels;
        let created = 0;
        let refusal;
        for (let i = 0; i < 15 && !refusal; i++) {
          const r = await phx.join(`realtime:${uniq('node')}`);
          if (r.status === 'ok') created += 1;
          else refusal = reasonOf(r);
        }
        must(refusal === 'NodeChannelLimitReached: Too many channels on this node', `after ${existing} existing + ${created} new: ${refusal ?? 'no refusal'}`);
        must(existing + created === 10, `refused after ${existing} existing + ${created} new channels`);
        const old = await phx.join('realtime:canary');
        must(old.status === 'ok', `joining the existing canary channel: ${JSON.stringify(old)}`);
        const fresh = await sse(srv, `topic=${uniq('nodesse')}&apikey=${anon(srv)}`, { localAddress: '127.0.0.38' });
        fresh.close();
        must(fresh.status === 429 && fresh.text().includes('max_channels'), `SSE on a new topic: ${fresh.status} ${fresh.text()}`);
        const known = await sse(srv, `topic=canary&apikey=${anon(srv)}`, { localAddress: '127.0.0.38' });
        known.close();
        must(known.status === 200, `SSE on the existing channel: ${known.status} ${known.text()}`);
        return `refused at channel ${existing + created + 1} (join and SSE 429); existing channel joinable`;
      } finally {
        phx.close();
      }
    },
  },
];
