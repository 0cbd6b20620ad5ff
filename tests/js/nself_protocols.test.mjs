// The nself API with real clients from npm: socket.io-client at /socket.io/ and ws at /ws, across
// two gateways. Handshake and auth, rooms, chat messages (ephemeral and persisted through
// Postgres and the CDC) reaching every protocol, typing expiry, presence, ping, private rooms,
// forged tokens, rate limits and bad JSON.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { io } from 'socket.io-client'
import { supabase, subscribed, Inbox, closeAll, closeDb, tokens, GATEWAYS, sql } from './helpers.mjs'

const sockets = []

// A Socket.IO client on gateway `gateway`, resolved once the server said `authenticated`; its
// events (all of them) land in `socket.inbox` as {event, data}.
async function sio({ gateway = 0, token = tokens.alice, options = {} } = {}) {
  const socket = io(GATEWAYS[gateway], { transports: ['websocket'], auth: { token }, reconnection: false, ...options })
  sockets.push(socket)
  socket.inbox = new Inbox()
  socket.onAny((event, data) => socket.inbox.push({ event, data }))
  await new Promise((resolve, reject) => {
    socket.once('authenticated', resolve)
    socket.once('connect_error', reject)
  })
  return socket
}

// A /ws client; frames land in `client.inbox`; `client.request(frame)` resolves with the ack,
// pong or error answering `frame` (matched by id).
async function plain({ gateway = 0, token = tokens.bob, query = true } = {}) {
  const url = `${GATEWAYS[gateway].replace('http', 'ws')}/ws${query && token ? `?token=${token}` : ''}`
  const socket = new WebSocket(url)
  sockets.push(socket)
  const client = { socket, inbox: new Inbox(), next: 1 }
  socket.on('message', (data) => client.inbox.push(JSON.parse(data.toString())))
  await new Promise((resolve, reject) => {
    socket.once('open', resolve)
    socket.once('error', reject)
  })
  client.request = async (frame) => {
    const id = client.next++
    socket.send(JSON.stringify({ ...frame, id }))
    return client.inbox.find((f) => f.id === id && ['ack', 'pong', 'error'].includes(f.type))
  }
  await client.inbox.find((f) => f.type === 'connected')
  return client
}

before(async () => {
  await sql(`INSERT INTO realtime.channels (name, slug, type, persist_messages) VALUES ('Chat', 'js-chat', 'public', true) ON CONFLICT (slug) DO NOTHING`)
  await sql(`INSERT INTO realtime.channels (name, slug, type) VALUES ('Team', 'js-team', 'private') ON CONFLICT (slug) DO NOTHING`)
  await sql(`INSERT INTO realtime.channel_members (channel_id, user_id) SELECT id, 'alice' FROM realtime.channels WHERE slug = 'js-team' ON CONFLICT DO NOTHING`)
})

after(async () => {
  for (const socket of sockets.splice(0)) {
    if (socket.disconnect) socket.disconnect()
    else socket.terminate()
  }
  await closeAll()
  await closeDb()
})

test('socket.io handshake: connected, authenticated, ping → pong', async () => {
  const socket = await sio()
  const connected = await socket.inbox.find((e) => e.event === 'connected')
  assert.equal(connected.data.socketId.length > 0, true)
  assert.ok(connected.data.protocolVersion)
  const authenticated = await socket.inbox.find((e) => e.event === 'authenticated')
  assert.equal(authenticated.data.userId, 'alice')
  assert.deepEqual(authenticated.data.rooms, [])
  const ack = await socket.emitWithAck('ping')
  assert.equal(typeof ack.timestamp, 'number')
  await socket.inbox.find((e) => e.event === 'pong')
})

test('forged and missing tokens are refused at connect', async () => {
  await assert.rejects(sio({ token: tokens.forged }), (err) => err.data?.code === 'AUTHENTICATION_FAILED')
  await assert.rejects(sio({ token: tokens.expired }), (err) => err.data?.code === 'AUTHENTICATION_FAILED')
  await assert.rejects(sio({ token: '' }), (err) => err.data?.code === 'AUTHENTICATION_FAILED')
  // /ws: a bad token at the upgrade is a 401; without one, requests wait for auth.
  const status = await new Promise((resolve) => {
    const socket = new WebSocket(`${GATEWAYS[0].replace('http', 'ws')}/ws?token=${tokens.forged}`)
    socket.on('unexpected-response', (req, res) => {
      resolve(res.statusCode)
      req.destroy()
    })
    socket.on('open', () => resolve('open'))
    socket.on('error', () => {})
  })
  assert.equal(status, 401)
  const client = await plain({ token: null })
  const refused = await client.request({ type: 'subscribe', channel: 'js-room' })
  assert.equal(refused.type, 'error')
  assert.equal(refused.code, 'AUTHENTICATION_FAILED')
  const forged = await client.request({ type: 'auth', token: tokens.forged })
  assert.equal(forged.code, 'AUTHENTICATION_FAILED')
  const ok = await client.request({ type: 'auth', token: tokens.bob })
  assert.equal(ok.type, 'ack')
  assert.equal(ok.payload.userId, 'bob')
  assert.equal((await client.request({ type: 'subscribe', channel: 'js-room' })).type, 'ack')
})

test('an ephemeral message reaches Socket.IO, /ws and supabase-js across gateways', async () => {
  const room = 'js-relay'
  const alice = await sio({ gateway: 0 })
  const bob = await plain({ gateway: 1 })
  const carol = supabase({ token: tokens.bob, gateway: 1 })
  const heard = new Inbox()
  await subscribed(carol.channel(room).on('broadcast', { event: 'message:new' }, heard.push))
  const joined = await alice.emitWithAck('room:join', { roomName: room })
  assert.equal(joined.roomName, room)
  await alice.inbox.find((e) => e.event === 'room:joined')
  assert.equal((await bob.request({ type: 'subscribe', channel: room })).type, 'ack')
  // Bob joining is seen by Alice as a user joining (through presence, across gateways).
  const seen = await alice.inbox.find((e) => e.event === 'user:joined' && e.data.userId === 'bob')
  assert.equal(seen.data.roomName, room)
  const sent = await alice.emitWithAck('message:send', { roomName: room, content: 'hi all 👋', metadata: { tag: 1 } })
  assert.equal(sent.ok, true)
  assert.equal(sent.message.persisted, false)
  const onWs = await bob.inbox.find((f) => f.type === 'message' && f.payload.content === 'hi all 👋')
  assert.equal(onWs.event, 'message:new')
  assert.equal(onWs.payload.userId, 'alice')
  assert.deepEqual(onWs.payload.metadata, { tag: 1 })
  const [onPhoenix] = await heard.count(1)
  assert.equal(onPhoenix.payload.content, 'hi all 👋')
  const own = await alice.inbox.find((e) => e.event === 'message:new')
  assert.equal(own.data.id, sent.message.id)
  // And back: /ws → Socket.IO.
  const reply = await bob.request({ type: 'message', channel: room, content: 'hello alice' })
  assert.equal(reply.type, 'ack')
  const back = await alice.inbox.find((e) => e.event === 'message:new' && e.data.content === 'hello alice')
  assert.equal(back.data.userId, 'bob')
})

test('a persisted message is stored under RLS, delivered through the CDC, edited and deleted', async () => {
  const alice = await sio({ gateway: 0 })
  const bob = await plain({ gateway: 1 })
  const carol = supabase({ token: tokens.bob, gateway: 0, vsn: '1.0.0' })
  const heard = new Inbox()
  await subscribed(carol.channel('js-chat').on('broadcast', { event: '*' }, heard.push))
  const joined = await alice.emitWithAck('room:join', { roomName: 'js-chat' })
  assert.equal(joined.persisted, true)
  assert.equal((await bob.request({ type: 'subscribe', channel: 'js-chat' })).payload.persisted, true)
  const sent = await alice.emitWithAck('message:send', { roomName: 'js-chat', content: 'kept', messageType: 'text', threadId: 't1' })
  assert.equal(sent.ok, true, JSON.stringify(sent))
  assert.equal(sent.message.persisted, true)
  const [row] = await sql(`SELECT id::text, user_id, content, thread_id FROM realtime.messages WHERE id = $1`, [sent.message.id])
  assert.deepEqual(row, { id: sent.message.id, user_id: 'alice', content: 'kept', thread_id: 't1' })
  const onWs = await bob.inbox.find((f) => f.type === 'message' && f.payload.id === sent.message.id)
  assert.equal(onWs.event, 'message:new')
  assert.equal(onWs.payload.threadId, 't1')
  await alice.inbox.find((e) => e.event === 'message:new' && e.data.id === sent.message.id)
  await heard.find((m) => m.event === 'message:new' && m.payload.id === sent.message.id)
  // Edits and deletes made in the database reach every protocol.
  await sql(`UPDATE realtime.messages SET content = 'kept (edited)', edited_at = now() WHERE id = $1`, [sent.message.id])
  const edited = await alice.inbox.find((e) => e.event === 'message:updated')
  assert.equal(edited.data.content, 'kept (edited)')
  await bob.inbox.find((f) => f.event === 'message:updated' && f.payload.content === 'kept (edited)')
  await sql(`UPDATE realtime.messages SET deleted_at = now() WHERE id = $1`, [sent.message.id])
  await alice.inbox.find((e) => e.event === 'message:deleted' && e.data.id === sent.message.id)
  await sql(`DELETE FROM realtime.messages WHERE id = $1`, [sent.message.id])
  await bob.inbox.find((f) => f.event === 'message:deleted' && f.payload.id === sent.message.id && f.payload.deletedAt !== undefined)
  await heard.find((m) => m.event === 'message:deleted')
})

test('private rooms: members join, others get ROOM_ACCESS_DENIED', async () => {
  const alice = await sio({ gateway: 0 })
  const joined = await alice.emitWithAck('room:join', { roomName: 'js-team' })
  assert.equal(joined.channelType, 'private')
  const bob = await sio({ gateway: 1, token: tokens.bob })
  const refused = await bob.emitWithAck('room:join', { roomName: 'js-team' })
  assert.equal(refused.error.code, 'ROOM_ACCESS_DENIED')
  const error = await bob.inbox.find((e) => e.event === 'error')
  assert.equal(error.data.code, 'ROOM_ACCESS_DENIED')
  // Sending to a room not joined is refused too, and the socket stays usable.
  const notJoined = await bob.emitWithAck('message:send', { roomName: 'js-team', content: 'let me in' })
  assert.equal(notJoined.error.code, 'ROOM_ACCESS_DENIED')
  assert.equal(typeof (await bob.emitWithAck('ping')).timestamp, 'number')
  const ws = await plain({ gateway: 0, token: tokens.bob })
  const wsRefused = await ws.request({ type: 'subscribe', channel: 'js-team' })
  assert.equal(wsRefused.code, 'ROOM_ACCESS_DENIED')
})

test('typing indicators cross gateways and expire', async () => {
  const alice = await sio({ gateway: 0 })
  const bob = await plain({ gateway: 1 })
  await alice.emitWithAck('room:join', { roomName: 'js-typing' })
  await bob.request({ type: 'subscribe', channel: 'js-typing' })
  const started = Date.now()
  alice.emit('typing:start', { roomName: 'js-typing' })
  const typing = await bob.inbox.find((f) => f.type === 'typing' && f.payload.users.includes('alice'))
  assert.equal(typing.payload.roomName, 'js-typing')
  // No typing:stop: the indicator expires after REALTIME_TYPING_TIMEOUT (1 s in this stack).
  await bob.inbox.find((f) => f.type === 'typing' && f.payload.users.length === 0, 5000)
  assert.ok(Date.now() - started >= 900, 'expired too early')
  // Each gateway expires typists on its own clock: wait for Alice's to agree.
  await alice.inbox.find((e) => e.event === 'typing:event' && e.data.users.length === 0, 5000)
  // An explicit stop clears at once, on the sender's gateway too.
  await bob.request({ type: 'typing', channel: 'js-typing', typing: true })
  await alice.inbox.find((e) => e.event === 'typing:event' && e.data.users.includes('bob'))
  const mark = alice.inbox.items.length
  await bob.request({ type: 'typing', channel: 'js-typing', typing: false })
  const cleared = await alice.inbox.until(() => alice.inbox.items.slice(mark).find((e) => e.event === 'typing:event'), 10000)
  assert.deepEqual(cleared.data.users, [])
})

test('presence updates and leaves cross gateways', async () => {
  const alice = await sio({ gateway: 0 })
  const bob = await sio({ gateway: 1, token: tokens.bob })
  await alice.emitWithAck('room:join', { roomName: 'js-presence-io' })
  await bob.emitWithAck('room:join', { roomName: 'js-presence-io' })
  await alice.inbox.find((e) => e.event === 'user:joined' && e.data.userId === 'bob')
  bob.emit('presence:update', { status: 'busy', customStatus: { text: 'in a meeting', emoji: '📅' } })
  const changed = await alice.inbox.find((e) => e.event === 'presence:changed' && e.data.status === 'busy')
  assert.equal(changed.data.userId, 'bob')
  assert.equal(changed.data.customStatus.text, 'in a meeting')
  const invalid = await bob.emitWithAck('presence:update', { status: 'sleeping' })
  assert.equal(invalid.error.code, 'VALIDATION_ERROR')
  bob.disconnect()
  const left = await alice.inbox.find((e) => e.event === 'user:left' && e.data.userId === 'bob')
  assert.equal(left.data.roomName, 'js-presence-io')
})

test('rate limits answer RATE_LIMIT_EXCEEDED and the connection stays', async () => {
  const alice = await sio({ gateway: 0 })
  await alice.emitWithAck('room:join', { roomName: 'js-limits' })
  // 60 messages per connection per minute (the default), as fast as they go.
  const acks = await Promise.all(Array.from({ length: 61 }, (_, i) => alice.emitWithAck('message:send', { roomName: 'js-limits', content: `m${i}` })))
  const limited = acks.filter((a) => a.error)
  assert.equal(limited.length, 1)
  assert.equal(limited[0].error.code, 'RATE_LIMIT_EXCEEDED')
  assert.ok(limited[0].error.details.retryAfter >= 1)
  assert.equal(typeof (await alice.emitWithAck('ping')).timestamp, 'number')
  // 10 presence updates per minute.
  const presence = await Promise.all(Array.from({ length: 11 }, () => alice.emitWithAck('presence:update', { status: 'away' })))
  assert.equal(presence.filter((a) => a.error?.code === 'RATE_LIMIT_EXCEEDED').length, 1)
})

test('validation: empty, oversized and mistyped messages; bad JSON on /ws', async () => {
  const alice = await sio({ gateway: 0 })
  await alice.emitWithAck('room:join', { roomName: 'js-valid' })
  for (const [payload, pattern] of [
    [{ roomName: 'js-valid', content: '' }, /empty/],
    [{ roomName: 'js-valid', content: 'x'.repeat(10001) }, /too long/],
    [{ roomName: 'js-valid', content: 'x', messageType: 'video' }, /Invalid message type/],
    [{ roomName: 'js-valid', content: 7 }, /string/],
    [{ content: 'x' }, /room/],
  ]) {
    const ack = await alice.emitWithAck('message:send', payload)
    assert.equal(ack.error.code, 'VALIDATION_ERROR')
    assert.match(ack.error.message, pattern)
  }
  const unknown = await alice.emitWithAck('room:dance', {})
  assert.equal(unknown.error.code, 'VALIDATION_ERROR')
  const ws = await plain({ gateway: 1 })
  ws.socket.send('{"type": "subscribe", ')
  const bad = await ws.inbox.find((f) => f.type === 'error' && /invalid JSON/.test(f.message))
  assert.equal(bad.code, 'VALIDATION_ERROR')
  ws.socket.send('[1, 2]')
  await ws.inbox.find((f) => f.type === 'error' && /"type"/.test(f.message))
  const pong = await ws.request({ type: 'ping' })
  assert.equal(pong.type, 'pong')
})
