// Broadcast and presence through @supabase/supabase-js across two gateways, with both protocol
// versions; REST broadcast; private channels and bad tokens refused.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import { supabase, subscribed, Inbox, closeAll, closeDb, tokens, GATEWAYS, SERVICE_KEY, ANON_KEY, sql } from './helpers.mjs'

after(async () => {
  await closeAll()
  await closeDb()
})

for (const [senderVsn, receiverVsn] of [['1.0.0', '2.0.0'], ['2.0.0', '1.0.0'], ['2.0.0', '2.0.0']]) {
  test(`broadcast across gateways, ${senderVsn} -> ${receiverVsn}`, async () => {
    const topic = `js-chat-${senderVsn}-${receiverVsn}`
    const sender = supabase({ token: tokens.alice, gateway: 0, vsn: senderVsn })
    const receiver = supabase({ token: tokens.bob, gateway: 1, vsn: receiverVsn })
    const heard = new Inbox()
    const echoed = new Inbox()
    await subscribed(receiver.channel(topic).on('broadcast', { event: 'msg' }, heard.push))
    const channel = sender.channel(topic, { config: { broadcast: { self: true, ack: true } } }).on('broadcast', { event: 'msg' }, echoed.push)
    await subscribed(channel)
    const status = await channel.send({ type: 'broadcast', event: 'msg', payload: { text: 'héllo 👋' } })
    assert.equal(status, 'ok')
    const [got] = await heard.count(1)
    assert.deepEqual(got.payload, { text: 'héllo 👋' })
    assert.equal(got.event, 'msg')
    const [own] = await echoed.count(1)
    assert.deepEqual(own.payload, { text: 'héllo 👋' })
  })
}

test('presence join and leave across gateways', async () => {
  const alice = supabase({ token: tokens.alice, gateway: 0 })
  const bob = supabase({ token: tokens.bob, gateway: 1, vsn: '1.0.0' })
  const joins = new Inbox()
  const leaves = new Inbox()
  const watcher = bob
    .channel('js-presence', { config: { presence: { key: 'bob' } } })
    .on('presence', { event: 'join' }, joins.push)
    .on('presence', { event: 'leave' }, leaves.push)
  await subscribed(watcher)
  const tracked = alice.channel('js-presence', { config: { presence: { key: 'alice' } } }).on('presence', { event: 'sync' }, () => {})
  await subscribed(tracked)
  assert.equal(await tracked.track({ online_at: 'now', mood: 'fine' }), 'ok')
  const join = await joins.find((j) => j.key === 'alice')
  assert.equal(join.newPresences[0].mood, 'fine')
  assert.ok(watcher.presenceState().alice)
  assert.equal(await tracked.untrack(), 'ok')
  const leave = await leaves.find((l) => l.key === 'alice')
  assert.equal(leave.leftPresences[0].mood, 'fine')
})

test('a private channel the user is not a member of is refused', async () => {
  await sql(`INSERT INTO realtime.channels (name, slug, type) VALUES ('Staff', 'js-staff', 'private') ON CONFLICT (slug) DO NOTHING`)
  const client = supabase({ token: tokens.bob })
  const channel = client.channel('js-staff', { config: { private: true } })
  await assert.rejects(subscribed(channel), /CHANNEL_ERROR/)
})

test('REST broadcast reaches subscribers', async () => {
  const receiver = supabase({ token: tokens.bob, gateway: 1 })
  const heard = new Inbox()
  await subscribed(receiver.channel('js-rest').on('broadcast', { event: 'news' }, heard.push))
  const response = await fetch(`${GATEWAYS[0]}/realtime/v1/api/broadcast`, {
    method: 'POST',
    headers: { apikey: SERVICE_KEY, Authorization: `Bearer ${SERVICE_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ messages: [{ topic: 'js-rest', event: 'news', payload: { n: 1 } }] }),
  })
  assert.equal(response.status, 202)
  const [got] = await heard.count(1)
  assert.deepEqual(got.payload, { n: 1 })
  // httpSend, from realtime-js itself.
  const sender = supabase({ token: tokens.alice, apikey: SERVICE_KEY })
  const result = await sender.channel('js-rest').httpSend('news', { n: 2 })
  assert.deepEqual(result, { success: true })
  await heard.find((m) => m.payload.n === 2)
})

test('forged and expired tokens are refused', async () => {
  for (const bad of [tokens.forged, tokens.expired]) {
    const status = await new Promise((resolve) => {
      const socket = new WebSocket(`${GATEWAYS[0].replace('http', 'ws')}/realtime/v1/websocket?apikey=${bad}&vsn=1.0.0`)
      // ws leaves the refused request open when this event has a listener: destroy it.
      socket.on('unexpected-response', (req, res) => {
        resolve(res.statusCode)
        req.destroy()
      })
      socket.on('open', () => {
        resolve('open')
        socket.terminate()
      })
      socket.on('error', () => {})
    })
    assert.equal(status, 401)
  }
  // A forged user token on a valid socket: the join fails.
  const client = supabase({ token: tokens.forged, apikey: ANON_KEY })
  await assert.rejects(subscribed(client.channel('js-forged')), /CHANNEL_ERROR/)
})
