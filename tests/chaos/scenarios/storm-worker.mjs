// A child process of the storm scenario: opens its share of SDK clients from one 127.0.0.x source
// address, each joined to one channel, and reports to the parent (IPC) how many are live and
// joined, how many came back after the last mark (the node's restart), and how many received the
// last probe broadcast.
import { Herald } from '../../../clients/js/herald.js';
import { sdkOptions } from '../lib/clients.mjs';

let clients = [];
let markAt = 0;

function report() {
  let joined = 0;
  let rejoined = 0;
  let probed = 0;
  let lastRejoinAt = 0;
  for (const c of clients) {
    const ok = c.herald.state.state === 'live' && c.ch.status === 'joined';
    if (ok) joined += 1;
    if (ok && c.down) {
      rejoined += 1;
      if (c.rejoinedAt > lastRejoinAt) lastRejoinAt = c.rejoinedAt;
    }
    if (c.probe) probed += 1;
  }
  process.send({ type: 'progress', joined, rejoined, probed, lastRejoinAt, markAt });
}

process.on('message', (msg) => {
  if (msg.cmd === 'start') {
    const { n, base, localAddress, channels, offset } = msg;
    for (let i = 0; i < n; i++) {
      const herald = new Herald(base, sdkOptions({ localAddress, heartbeatMs: 25_000 }));
      const ch = herald.channel(`chaos:storm-${(offset + i) % channels}`);
      const c = { herald, ch, down: false, rejoinedAt: 0, probe: false };
      herald.on('state', (s) => {
        if (s.state !== 'live' && markAt) c.down = true;
      });
      ch.on('status', ({ status }) => {
        if (status === 'joined' && c.down && !c.rejoinedAt) c.rejoinedAt = Date.now();
      });
      ch.on('broadcast', 'probe', () => {
        c.probe = true;
      });
      ch.subscribe();
      clients.push(c);
    }
  } else if (msg.cmd === 'mark') {
    markAt = Date.now();
    for (const c of clients) {
      c.down = false;
      c.rejoinedAt = 0;
      c.probe = false;
    }
  } else if (msg.cmd === 'unprobe') {
    for (const c of clients) c.probe = false;
  } else if (msg.cmd === 'stop') {
    for (const c of clients) c.herald.disconnect();
    clients = [];
    process.exit(0);
  }
});

setInterval(report, 100);
