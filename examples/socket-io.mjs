// examples/socket-io.mjs: socket.io-client joins room `general`, then says hi once joined.
// Prints: authenticated as demo-user, joined general, demo-user: hi (the sender gets it too).
import { io } from 'socket.io-client'

const url = process.env.REALTIME_URL ?? 'http://localhost:4000'
const token = process.env.USER_TOKEN
if (!token) throw new Error('set USER_TOKEN (the demo user token `up` printed)')

const socket = io(url, { transports: ['websocket'], auth: { token } })
socket.on('connect_error', (err) => console.error('refused:', err.message))
socket.on('error', (err) => console.error('error:', err.code, err.message))
socket.on('message:new', (message) => console.log(`${message.userId}: ${message.content}`))
socket.on('authenticated', async ({ userId }) => {
  console.log('authenticated as', userId)
  // Wait for the join's answer: a message sent to a room not joined yet is refused.
  const joined = await socket.emitWithAck('room:join', { roomName: 'general' })
  if (joined.error) return console.error('join refused:', joined.error.message)
  console.log('joined', joined.roomName)
  const sent = await socket.emitWithAck('message:send', { roomName: 'general', content: 'hi' })
  if (sent.error) console.error('not sent:', sent.error.message)
})
