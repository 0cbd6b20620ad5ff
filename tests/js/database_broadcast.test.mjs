// Supabase Realtime's database surface through @supabase/supabase-js, with the SQL of Supabase's
// docs as an app ships it: private channels authorized by policies on realtime.messages
// (receive and send, broadcast and presence), Broadcast from Database (realtime.send,
// send_binary, a broadcast_changes trigger) reaching the other gateway, broadcast replay and
// replication_ready, and chat messages persisted by default.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { io } from 'socket.io-client'
import { supabase, sql, subscribed, Inbox, closeAll, closeDb, tokens, userIds, quietPeriod } from './helpers.mjs'

before(async () => {
  // Supabase's "Broadcast and Presence Authorization" example, verbatim.
  await sql(`create table if not exists public.rooms_users (user_id uuid, topic text)`)
  await sql(`grant select on public.rooms_users to authenticated`)
  await sql(`insert into public.rooms_users values ($1, 'room:1'), ($2, 'room:1'), ($1, 'topic:1'), ($2, 'topic:1'), ($1, 'room:replay'), ($2, 'room:binary')`,
    [userIds.ana, userIds.ben])
  await sql(`create policy "authenticated can read broadcast and presence state"
    on realtime.messages
    for select
    to authenticated
    using (
      exists (
        select
          user_id
        from
          rooms_users
        where
          user_id = (select auth.uid())
          and topic = (select realtime.topic())
          and realtime.messages.extension in ('broadcast', 'presence')
      )
    )`)
  await sql(`create policy "authenticated can send broadcast and presence state"
    on realtime.messages
    for insert
    to authenticated
    with check (
      exists (
        select
          user_id
        from
          rooms_users
        where
          user_id = (select auth.uid())
          and topic = (select realtime.topic())
          and realtime.messages.extension in ('broadcast', 'presence')
      )
    )`)
  // Rita may only listen to room:1's broadcasts: no presence, no sending.
  await sql(`create policy "rita reads room:1 broadcasts" on realtime.messages for select to authenticated
    using ((select auth.uid()) = '${userIds.rita}' and realtime.topic() = 'room:1' and extension = 'broadcast')`)
  // The docs' broadcast_changes trigger, verbatim.
  await sql(`create table if not exists public.your_table (id int primary key, topic int, body text)`)
  await sql(`create or replace function public.your_table_changes()
    returns trigger
    security definer
    language plpgsql
    as $$
    begin
      perform realtime.broadcast_changes(
        'topic:' || coalesce(NEW.topic, OLD.topic) ::text, -- topic - the topic to which we're broadcasting
        TG_OP,                                             -- event - the event that triggered the function
        TG_OP,                                             -- operation - the operation that triggered the function
        TG_TABLE_NAME,                                     -- table - the table that caused the trigger
        TG_TABLE_SCHEMA,                                   -- schema - the schema of the table that caused the trigger
        NEW,                                               -- new record - the record after the change
        OLD                                                -- old record - the record before the change
      );
      return null;
    end;
    $$`)
  await sql(`create trigger handle_your_table_changes
    after insert or update or delete
    on public.your_table
    for each row
    execute function your_table_changes ()`)
})

after(async () => {
  await closeAll()
  // auth.uid() casts the token's sub to uuid, as in Supabase: the other files' users ('alice')
  // would make these policies raise on their writes to realtime.messages.
  await sql(`drop policy "authenticated can read broadcast and presence state" on realtime.messages`)
  await sql(`drop policy "authenticated can send broadcast and presence state" on realtime.messages`)
  await sql(`drop policy "rita reads room:1 broadcasts" on realtime.messages`)
  await closeDb()
})

const privateChannel = (client, topic, config = {}) => client.channel(topic, { config: { private: true, ...config } })

// Subscribes and resolves with the error status and message (for refusals).
const refused = (channel) =>
  new Promise((resolve) => {
    channel.subscribe((status, err) => {
      if (status !== 'SUBSCRIBED') resolve({ status, message: err?.message })
    })
  })

test('messages policies admit members to a private channel and refuse others in Supabase words', async () => {
  await subscribed(privateChannel(supabase({ token: tokens.ana }), 'room:1'))
  const otto = await refused(privateChannel(supabase({ token: tokens.otto }), 'room:1'))
  assert.equal(otto.status, 'CHANNEL_ERROR')
  assert.match(otto.message, /Unauthorized: You do not have permissions to read from this Channel topic: room:1/)
})

test('broadcast and presence on a private channel: members send and track, a reader may not', async () => {
  const heard = new Inbox()
  const synced = new Inbox()
  const ben = privateChannel(supabase({ token: tokens.ben, gateway: 1 }), 'room:1', { presence: { key: 'ben' } })
    .on('broadcast', { event: 'note' }, heard.push)
    .on('presence', { event: 'sync' }, () => synced.push(ben.presenceState()))
  await subscribed(ben)
  const ana = privateChannel(supabase({ token: tokens.ana }), 'room:1', { presence: { key: 'ana' } })
  await subscribed(ana)
  assert.equal(await ana.send({ type: 'broadcast', event: 'note', payload: { from: 'ana' } }), 'ok')
  assert.deepEqual((await heard.find((m) => m.payload.from === 'ana')).payload, { from: 'ana' })
  assert.equal(await ana.track({ online: true }), 'ok')
  await synced.find((state) => state.ana?.[0]?.online === true)

  const rita = privateChannel(supabase({ token: tokens.rita }), 'room:1', { broadcast: { ack: true } })
  await subscribed(rita)
  assert.equal(await rita.send({ type: 'broadcast', event: 'note', payload: { from: 'rita' } }), 'error')
  assert.equal(await rita.track({ online: true }), 'error')
  await quietPeriod(300)
  assert.equal(heard.items.filter((m) => m.payload.from === 'rita').length, 0)
})

test('realtime.send reaches private subscribers on the other gateway, and only them', async () => {
  const heard = new Inbox()
  const publicHeard = new Inbox()
  await subscribed(privateChannel(supabase({ token: tokens.ben, gateway: 1 }), 'room:1').on('broadcast', { event: 'db' }, heard.push))
  await subscribed(supabase({ token: tokens.otto, gateway: 1 }).channel('room:1').on('broadcast', { event: 'db' }, publicHeard.push))
  await sql(`select realtime.send(jsonb_build_object('hello', 'world'), 'db', 'room:1', true)`)
  const message = await heard.find(() => true)
  assert.equal(message.type, 'broadcast')
  assert.equal(message.event, 'db')
  assert.equal(message.payload.hello, 'world')
  assert.match(message.payload.id, /^[0-9a-f-]{36}$/)
  assert.equal(message.meta.id, message.payload.id)
  // A public broadcast of the same topic reaches the public subscriber only.
  await sql(`select realtime.send('{"scope": "public"}'::jsonb, 'db', 'room:1', false)`)
  assert.equal((await publicHeard.find(() => true)).payload.scope, 'public')
  assert.equal(publicHeard.items.filter((m) => m.payload.hello).length, 0)
  assert.equal(heard.items.filter((m) => m.payload.scope).length, 0)
})

test('a broadcast_changes trigger sends Supabase payloads', async () => {
  const heard = new Inbox()
  await subscribed(privateChannel(supabase({ token: tokens.ana, gateway: 1 }), 'topic:1').on('broadcast', { event: '*' }, heard.push))
  await sql(`insert into public.your_table values (1, 1, 'first')`)
  await sql(`update public.your_table set body = 'second' where id = 1`)
  await sql(`delete from public.your_table where id = 1`)
  const [inserted, updated, deleted] = await heard.count(3)
  assert.equal(inserted.event, 'INSERT')
  assert.deepEqual(
    { ...inserted.payload, id: undefined },
    { id: undefined, schema: 'public', table: 'your_table', operation: 'INSERT', record: { id: 1, topic: 1, body: 'first' }, old_record: null }
  )
  assert.equal(updated.payload.operation, 'UPDATE')
  assert.equal(updated.payload.old_record.body, 'first')
  assert.equal(updated.payload.record.body, 'second')
  assert.equal(deleted.payload.operation, 'DELETE')
  assert.equal(deleted.payload.record, null)
})

test('realtime.send_binary arrives as a binary broadcast on vsn 2.0.0', async () => {
  const heard = new Inbox()
  await subscribed(privateChannel(supabase({ token: tokens.ben, gateway: 0, vsn: '2.0.0' }), 'room:binary').on('broadcast', { event: 'bytes' }, heard.push))
  await sql(`select realtime.send_binary('\\x00ff10'::bytea, 'bytes', 'room:binary')`)
  const message = await heard.find(() => true)
  assert.ok(message.payload instanceof ArrayBuffer, `payload: ${message.payload}`)
  assert.deepEqual([...new Uint8Array(message.payload)], [0, 255, 16])
  assert.match(message.meta.id, /^[0-9a-f-]{36}$/)
})

test('replay: the newest stored broadcasts since a time, then live, with no duplicate', async () => {
  const since = Date.now() - 1000
  for (let n = 1; n <= 30; n++) {
    await sql(`select realtime.send(jsonb_build_object('n', $1::int), 'tick', 'room:replay', true)`, [n])
  }
  const heard = new Inbox()
  const ready = new Inbox()
  const channel = privateChannel(supabase({ token: tokens.ana, gateway: 1 }), 'room:replay', {
    broadcast: { replay: { since, limit: 25 }, replication_ready: true },
  })
    .on('broadcast', { event: 'tick' }, heard.push)
    .on('system', {}, ready.push)
  await subscribed(channel)
  const replayed = await heard.count(25)
  assert.deepEqual(replayed.map((m) => m.payload.n), Array.from({ length: 25 }, (_, i) => i + 6))
  for (const message of replayed) {
    assert.equal(message.meta.replayed, true)
    assert.equal(message.meta.id, message.payload.id)
  }
  const system = await ready.find((m) => m.extension === 'system')
  assert.equal(system.status, 'ok')
  // A user the policies do not let read the topic gets no replay: the join is refused.
  const outsider = await refused(
    privateChannel(supabase({ token: tokens.otto }), 'room:replay', { broadcast: { replay: { since, limit: 25 } } })
  )
  assert.match(outsider.message, /You do not have permissions to read from this Channel topic: room:replay/)
  await sql(`select realtime.send('{"n": 31}'::jsonb, 'tick', 'room:replay', true)`)
  const live = await heard.find((m) => m.payload.n === 31)
  assert.equal(live.meta.replayed, undefined)
  await quietPeriod(300)
  assert.equal(heard.items.length, 26, 'no replayed broadcast arrives twice')
})

test('a chat message from Socket.IO is persisted by default and reaches a supabase-js subscriber', async () => {
  await sql(`insert into realtime.channels (name, slug, type) values ('Lobby', 'js-lobby', 'public')`)
  const heard = new Inbox()
  await subscribed(supabase({ token: tokens.bob, gateway: 1 }).channel('js-lobby').on('broadcast', { event: 'message:new' }, heard.push))
  // A Supabase user (UUID sub): the policies above cast it with auth.uid().
  const socket = io(process.env.GATEWAY_A, { transports: ['websocket'], auth: { token: tokens.ana }, reconnection: false })
  try {
    await new Promise((resolve, reject) => {
      socket.once('authenticated', resolve)
      socket.once('connect_error', reject)
    })
    await socket.emitWithAck('room:join', { roomName: 'js-lobby' })
    const sent = await socket.emitWithAck('message:send', { roomName: 'js-lobby', content: 'kept by default' })
    assert.equal(sent.ok, true, JSON.stringify(sent))
    assert.equal(sent.message.persisted, true)
    const message = await heard.find((m) => m.payload.content === 'kept by default')
    assert.equal(message.payload.id, sent.message.id)
    assert.equal(message.payload.userId, userIds.ana)
    const [stored] = await sql(`select content, topic, event from realtime.messages where id = $1`, [sent.message.id])
    assert.deepEqual(stored, { content: 'kept by default', topic: 'js-lobby', event: 'message:new' })
  } finally {
    socket.close()
  }
})
