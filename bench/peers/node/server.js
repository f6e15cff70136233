'use strict';
// Reference peer for the benchmarks: a WebSocket server on `ws`, what many users would pick.
//
// Usage: node server.js echo|broadcast HOST:PORT [--tls CERT.pem KEY.pem]
//   echo:      every message is sent back to its sender (text stays text, binary stays binary)
//   broadcast: a message from any connection is sent to every *other* connection

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer, WebSocket } = require('ws');

function usage() {
  console.error('usage: node server.js echo|broadcast HOST:PORT [--tls CERT.pem KEY.pem]');
  process.exit(2);
}

const args = process.argv.slice(2);
if (args.length !== 2 && args.length !== 5) usage();
const mode = args[0];
if (mode !== 'echo' && mode !== 'broadcast') usage();
const sep = args[1].lastIndexOf(':');
if (sep < 0) usage();
const host = args[1].slice(0, sep);
const port = Number(args[1].slice(sep + 1));
let server;
if (args.length === 5) {
  if (args[2] !== '--tls') usage();
  server = https.createServer({ cert: fs.readFileSync(args[3]), key: fs.readFileSync(args[4]) });
} else {
  server = http.createServer();
}

const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: true });

wss.on('connection', (ws) => {
  if (mode === 'echo') {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  } else {
    ws.on('message', (data, isBinary) => {
      for (const client of wss.clients) {
        if (client !== ws && client.readyState === WebSocket.OPEN) {
          client.send(data, { binary: isBinary });
        }
      }
    });
  }
  ws.on('error', () => {});
});

server.listen({ host, port, backlog: 4096 }, () => {
  console.error(`node-peer: ${mode} on ${host}:${port}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
