// The reference that `realtime-bench socketio-fanout` measures nself-realtime's Socket.IO
// gateway against: a plain Node.js Socket.IO server with the seeds' own architecture (one Node
// process, socket.io 4.x as pinned in package-lock.json, the `ws` WebSocket transport) speaking
// the same events as the gateway's /socket.io/ endpoint, and nothing else (no Redis, no
// database): the HS256 JWT is verified once at connect, `room:join` joins a room and answers
// `room:joined`, `message:send` is validated and emitted to the room as `message:new`.
//
// Env: PORT (required), JWT_SECRET (required), HOST (default 127.0.0.1), STOP_ON_STDIN_CLOSE=1
// to exit when standard input closes (the bench holds it open, so that this server never
// outlives the bench). Prints `listening on <host>:<port>` once it accepts connections.

import { createServer } from 'node:http';
import { Server } from 'socket.io';
import jwt from 'jsonwebtoken';

const port = Number(process.env.PORT);
const secret = process.env.JWT_SECRET;
const host = process.env.HOST || '127.0.0.1';
if (!port || !secret) {
  console.error('reference-server: PORT and JWT_SECRET are required');
  process.exit(2);
}

const MAX_CONTENT = 10_000;

const httpServer = createServer();
const io = new Server(httpServer, {
  // The websocket transport only, uncompressed: what the gateway offers.
  transports: ['websocket'],
  perMessageDeflate: false,
  serveClient: false,
});

io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  try {
    if (typeof token !== 'string') throw new Error('no token');
    const claims = jwt.verify(token, secret, { algorithms: ['HS256'] });
    socket.data.userId = String(claims.sub ?? '');
    next();
  } catch (e) {
    const err = new Error(`authentication failed: ${e.message}`);
    err.data = { code: 'AUTHENTICATION_FAILED' };
    next(err);
  }
});

const roomName = (payload) =>
  payload && typeof payload.roomName === 'string' && payload.roomName.length > 0
    ? payload.roomName
    : null;

io.on('connection', (socket) => {
  const { userId } = socket.data;
  socket.emit('connected', {
    socketId: socket.id,
    serverTime: new Date().toISOString(),
    protocolVersion: 5,
  });
  socket.emit('authenticated', { userId, sessionId: socket.id, rooms: [] });

  socket.on('room:join', (payload) => {
    const room = roomName(payload);
    if (!room) {
      socket.emit('error', { code: 'INVALID_PAYLOAD', message: 'roomName is required' });
      return;
    }
    socket.join(room);
    socket.emit('room:joined', { roomName: room });
  });

  socket.on('room:leave', (payload) => {
    const room = roomName(payload);
    if (room) socket.leave(room);
  });

  socket.on('message:send', (payload) => {
    const room = roomName(payload);
    const content = payload?.content;
    if (!room || typeof content !== 'string' || content.length === 0 || content.length > MAX_CONTENT) {
      socket.emit('error', { code: 'INVALID_PAYLOAD', message: 'content must be 1 to 10000 characters' });
      return;
    }
    if (!socket.rooms.has(room)) {
      socket.emit('error', { code: 'ROOM_ACCESS_DENIED', message: `not a member of ${room}` });
      return;
    }
    io.to(room).emit('message:new', {
      roomName: room,
      userId,
      content,
      metadata: payload.metadata,
      timestamp: new Date().toISOString(),
    });
  });
});

if (process.env.STOP_ON_STDIN_CLOSE === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();
}
process.on('SIGTERM', () => process.exit(0));

httpServer.listen(port, host, () => {
  console.log(`listening on ${host}:${port}`);
});
