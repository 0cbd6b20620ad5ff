// examples/websocket.mjs: the JSON protocol at /ws: authenticate, subscribe, send a message.
// Prints each frame: connected, an ack per request, the room's presence, the message itself.
import WebSocket from 'ws' // Node 22 and browsers have WebSocket built in: drop this line there

const url = process.env.REALTIME_URL ?? 'http://localhost:4000'
const token = process.env.USER_TOKEN
if (!token) throw new Error('set USER_TOKEN (the demo user token `up` printed)')

const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws`)
ws.onopen = () => {
  // The gateway answers a socket's requests in order, so these need not wait for each other.
  ws.send(JSON.stringify({ type: 'auth', token, id: 1 }))
  ws.send(JSON.stringify({ type: 'subscribe', channel: 'general', id: 2 }))
  ws.send(JSON.stringify({ type: 'message', channel: 'general', content: 'Hello, world!', id: 3 }))
}
ws.onmessage = ({ data }) => console.log(data)
ws.onclose = ({ code, reason }) => console.log('closed', code, reason)
