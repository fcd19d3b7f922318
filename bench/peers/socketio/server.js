// Socket.IO v4 reference server for `herald bench --protocol socketio`: the plainest Socket.IO app
// doing what the benchmark asks, so that it measures Socket.IO itself. See ../README.md.
//   join (room name, ack)   -> join the room, ack "ok"
//   publish {room, data}    -> emit "msg" with data to the room
//   POST /publish           -> {room, data} or an array of them, emitted the same way; 202
//   GET /healthz            -> 200
// Usage: node server.js [--port N]   (or PORT=N; default 4800). Listens on 127.0.0.1 only.
'use strict';
const http = require('node:http');
const { Server } = require('socket.io');

const flag = process.argv.indexOf('--port');
const port = Number(flag >= 0 ? process.argv[flag + 1] : process.env.PORT || 4800);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node server.js [--port 1-65535]');
  process.exit(2);
}

const MAX_BODY = 16 << 20;

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/healthz') return void res.writeHead(200).end('ok');
  if (req.method !== 'POST' || req.url !== '/publish') return void res.writeHead(404).end();
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > MAX_BODY) return void req.destroy();
    chunks.push(c);
  });
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return void res.writeHead(400).end('bad json');
    }
    const messages = Array.isArray(body) ? body : [body];
    if (!messages.every((m) => m && typeof m.room === 'string')) return void res.writeHead(422).end('room missing');
    for (const m of messages) io.to(m.room).emit('msg', m.data);
    res.writeHead(202).end();
  });
});

const io = new Server(server, { serveClient: false });
io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    if (typeof room !== 'string') return;
    socket.join(room);
    if (typeof ack === 'function') ack('ok');
  });
  socket.on('publish', (m) => {
    if (m && typeof m.room === 'string') io.to(m.room).emit('msg', m.data);
  });
});

server.listen(port, '127.0.0.1', () => console.error(`socket.io peer listening on 127.0.0.1:${port}`));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
