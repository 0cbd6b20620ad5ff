// postgres_changes through @supabase/supabase-js: typed values, filters (PostgREST's text
// operators and combined conditions too), RLS isolation between two users, resume with `since`,
// and a row committed right after SUBSCRIBED.
import { test, after, before } from 'node:test'
import assert from 'node:assert/strict'
import { supabase, sql, subscribed, Inbox, closeAll, closeDb, tokens, quietPeriod } from './helpers.mjs'

before(async () => {
  await sql(`CREATE TABLE IF NOT EXISTS public.js_items (
      id int PRIMARY KEY, name text, price numeric, qty int8, tags text[], meta jsonb,
      ok boolean, at timestamptz, owner text NOT NULL DEFAULT 'nobody')`)
  await sql(`ALTER TABLE public.js_items REPLICA IDENTITY FULL`)
  await sql(`GRANT SELECT ON public.js_items TO anon, authenticated`)
  await sql(`ALTER PUBLICATION nself_realtime ADD TABLE public.js_items`)
  await sql(`CREATE TABLE IF NOT EXISTS public.js_private (
      id int PRIMARY KEY, owner text NOT NULL, body text)`)
  await sql(`ALTER TABLE public.js_private ENABLE ROW LEVEL SECURITY`)
  await sql(`CREATE POLICY js_private_owner ON public.js_private FOR SELECT TO authenticated USING (owner = realtime.user_id())`)
  await sql(`GRANT SELECT ON public.js_private TO authenticated`)
  await sql(`ALTER PUBLICATION nself_realtime ADD TABLE public.js_private`)
})

after(async () => {
  await closeAll()
  await closeDb()
})

test('typed values and filters reach supabase-js', async () => {
  const client = supabase({ token: tokens.alice })
  const all = new Inbox()
  const pricey = new Inbox()
  const channel = client
    .channel('js-typed')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'js_items' }, all.push)
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'js_items', filter: 'price=gte.10' }, pricey.push)
  await subscribed(channel)
  await sql(`INSERT INTO public.js_items VALUES
      (1, 'cheap', 2.5, 9007199254740991, '{a,b}', '{"k":{"n":1}}', true, '2026-01-30T10:15:23Z'),
      (2, 'dear', 10.00, 3, '{}', '[]', false, NULL)`)
  await sql(`UPDATE public.js_items SET name = 'dearer' WHERE id = 2`)
  await sql(`DELETE FROM public.js_items WHERE id = 1`)
  const [first, second, update, remove] = await all.count(4)
  assert.equal(first.eventType, 'INSERT')
  assert.equal(first.schema, 'public')
  assert.equal(first.table, 'js_items')
  assert.deepEqual(first.new.tags, ['a', 'b'])
  assert.deepEqual(first.new.meta, { k: { n: 1 } })
  assert.equal(first.new.ok, true)
  assert.equal(first.new.price, 2.5)
  assert.equal(first.new.qty, 9007199254740991)
  assert.match(first.new.at, /^2026-01-30T10:15:23/)
  assert.ok(Date.parse(first.commit_timestamp) > 0)
  assert.equal(second.new.id, 2)
  assert.equal(update.eventType, 'UPDATE')
  assert.equal(update.old.name, 'dear')
  assert.equal(update.new.name, 'dearer')
  assert.equal(remove.eventType, 'DELETE')
  assert.equal(remove.old.id, 1)
  const [onlyDear] = await pricey.count(1)
  assert.equal(onlyDear.new.id, 2)
  await quietPeriod(300)
  assert.equal(pricey.items.length, 1, 'the price filter let a cheap row through')
})

test('like, ilike, match, imatch, isdistinct, negated and combined filters', async () => {
  const client = supabase({ token: tokens.alice })
  const filters = {
    like: 'name=like.widget*',
    ilike: 'name=ilike.*GADGET*',
    match: 'name=match.^w[a-z]+-[0-9]+$',
    imatch: 'name=imatch.^W',
    isdistinct: 'name=isdistinct.widget-1',
    combined: 'name=like.w*,price=gt.5',
    negated: 'name=not.ilike.*gadget*',
    all: undefined,
  }
  const inboxes = {}
  let channel = client.channel('js-text-filters')
  for (const [key, filter] of Object.entries(filters)) {
    inboxes[key] = new Inbox()
    const binding = { event: 'INSERT', schema: 'public', table: 'js_items' }
    if (filter) binding.filter = filter
    channel = channel.on('postgres_changes', binding, inboxes[key].push)
  }
  await subscribed(channel)
  await sql(`INSERT INTO public.js_items (id, name, price) VALUES
      (3001, 'widget-1', 10), (3002, 'Big Gadget', 1), (3003, 'widget-22', 2),
      (3004, 'Whatsit', 7), (3005, NULL, 3), (3006, 'wonder', 6)`)
  // One channel gets each change once, naming every binding it matches, in commit order: when
  // the catch-all has the last row, every filtered binding has had all it will get.
  await inboxes.all.count(6)
  const ids = (key) => inboxes[key].items.map((c) => c.new.id)
  assert.deepEqual(ids('like'), [3001, 3003])
  assert.deepEqual(ids('ilike'), [3002])
  assert.deepEqual(ids('match'), [3001, 3003])
  assert.deepEqual(ids('imatch'), [3001, 3003, 3004, 3006])
  assert.deepEqual(ids('isdistinct'), [3002, 3003, 3004, 3005, 3006])
  assert.deepEqual(ids('combined'), [3001, 3006])
  assert.deepEqual(ids('negated'), [3001, 3003, 3004, 3006])
})

test('select restricts the payload to the listed columns', async () => {
  const client = supabase({ token: tokens.alice })
  const slim = new Inbox()
  const whole = new Inbox()
  const channel = client
    .channel('js-select')
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'js_items', filter: 'id=gte.4000', select: ['id', 'name'] }, slim.push)
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'js_items', filter: 'id=gte.4000' }, whole.push)
  await subscribed(channel)
  await sql(`INSERT INTO public.js_items (id, name, price, meta) VALUES (4001, 'slim', 3, '{"big": true}')`)
  const [selected] = await slim.count(1)
  const [everything] = await whole.count(1)
  assert.deepEqual(selected.new, { id: 4001, name: 'slim' })
  assert.equal(everything.new.price, 3)
  assert.deepEqual(everything.new.meta, { big: true })
})

test('RLS isolates two users', async () => {
  const alice = supabase({ token: tokens.alice, gateway: 0 })
  const bob = supabase({ token: tokens.bob, gateway: 1 })
  const aliceInbox = new Inbox()
  const bobInbox = new Inbox()
  await subscribed(alice.channel('js-rls-a').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'js_private' }, aliceInbox.push))
  await subscribed(bob.channel('js-rls-b').on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'js_private' }, bobInbox.push))
  await sql(`INSERT INTO public.js_private SELECT n, CASE WHEN n % 2 = 0 THEN 'alice' ELSE 'bob' END, 'x' FROM generate_series(1, 20) n`)
  const aliceRows = await aliceInbox.count(10)
  const bobRows = await bobInbox.count(10)
  await quietPeriod(300)
  assert.equal(aliceInbox.items.length, 10)
  assert.equal(bobInbox.items.length, 10)
  assert.ok(aliceRows.every((c) => c.new.owner === 'alice'))
  assert.ok(bobRows.every((c) => c.new.owner === 'bob'))
})

test('a row committed right after SUBSCRIBED is delivered', async () => {
  for (let round = 0; round < 10; round++) {
    const client = supabase({ token: tokens.alice, gateway: round % 2 })
    const inbox = new Inbox()
    const id = 1000 + round
    await subscribed(client.channel(`js-live-${round}`).on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'js_items', filter: `id=eq.${id}` }, inbox.push))
    await sql(`INSERT INTO public.js_items (id, name) VALUES ($1, 'live')`, [id])
    const [change] = await inbox.count(1)
    assert.equal(change.new.id, id)
  }
})

test('resume with since replays what was missed, then goes live', async () => {
  await sql(`INSERT INTO public.js_items (id, name) VALUES (2000, 'before')`)
  await quietPeriod(1100)
  const [{ since }] = await sql(`SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS since`)
  for (let id = 2001; id <= 2010; id++) await sql(`INSERT INTO public.js_items (id, name) VALUES ($1, 'missed')`, [id])
  const client = supabase({ token: tokens.alice, gateway: 1 })
  const inbox = new Inbox()
  const channel = client
    .channel('js-resume', { config: { postgres_changes_options: { since } } })
    .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'js_items', filter: 'id=gte.2000' }, inbox.push)
  await subscribed(channel)
  await sql(`INSERT INTO public.js_items (id, name) VALUES (2011, 'live')`)
  const changes = await inbox.count(11)
  assert.deepEqual(changes.map((c) => c.new.id), Array.from({ length: 11 }, (_, i) => 2001 + i))
  await quietPeriod(300)
  assert.equal(inbox.items.length, 11, 'duplicates after the replay')
})
