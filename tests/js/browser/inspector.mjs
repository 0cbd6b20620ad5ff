// The inspector (gateway/src/inspector/) in a real browser: Debian's chromium driven by
// playwright-core, against the two gateways, the CDC and Postgres that tests/tests/inspector.rs
// starts. A user pastes a token, joins a channel with postgres_changes, sees a row inserted with
// psql appear, sends a broadcast that a supabase-js client on the other gateway receives, tracks
// presence and sees the members list, and with a service_role token sees both gateways and the
// CDC. Values from the network are shown as text, never as markup.
//
// Not named *.test.mjs: js_clients.rs runs tests/js/*.test.mjs twice (two Node versions) and
// this one needs a browser; inspector.rs runs it once.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { chromium } from 'playwright-core'
import { supabase, subscribed, Inbox, closeAll, closeDb, tokens, GATEWAYS, SERVICE_KEY, sql } from '../helpers.mjs'

const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium'
const TIMEOUT = 10000
let browser

before(async () => {
  browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] })
  await sql(`CREATE TABLE IF NOT EXISTS public.inspector_notes (id serial PRIMARY KEY, body text NOT NULL)`)
  await sql(`GRANT SELECT ON public.inspector_notes TO authenticated`)
  await sql(`ALTER PUBLICATION nself_realtime ADD TABLE public.inspector_notes`)
})

after(async () => {
  await browser?.close()
  await closeAll()
  await closeDb()
})

// A page of the inspector on gateway `index`, connected with `token`.
async function inspector(token, index = 0) {
  const page = await browser.newPage()
  const problems = []
  page.on('pageerror', (e) => problems.push(e.message))
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()) })
  await page.goto(`${GATEWAYS[index]}/`)
  await page.fill('#token', token)
  await page.click('#connect-button')
  await page.waitForSelector('#status.ok', { timeout: TIMEOUT })
  return { page, problems }
}

async function joinChannel(page, name, table) {
  await page.fill('#join-name', name)
  if (table) await page.fill('#pg-table', table)
  await page.click('#join-button')
  await page.locator('#joined .chip', { hasText: `${name} · joined` }).waitFor({ timeout: TIMEOUT })
}

// The text of the first events-table row that contains every one of `parts`.
async function eventRow(page, ...parts) {
  let row = page.locator('#events tr.summary')
  for (const part of parts) row = row.filter({ hasText: part })
  await row.first().waitFor({ timeout: TIMEOUT })
  return row.first().innerText()
}

test('the page is served with a content security policy and no token in any URL', async () => {
  const response = await fetch(`${GATEWAYS[0]}/`)
  assert.equal(response.status, 200)
  const policy = response.headers.get('content-security-policy')
  assert.match(policy, /script-src 'self'/)
  assert.match(policy, /frame-ancestors 'none'/)
  assert.equal(response.headers.get('x-content-type-options'), 'nosniff')
  // A gateway not started by `up` offers no keys.
  const welcome = await (await fetch(`${GATEWAYS[0]}/inspector/welcome`)).json()
  assert.equal(welcome.offered, false)
  const { page, problems } = await inspector(tokens.alice)
  assert.equal(new URL(page.url()).search, '', 'the token is not in the page URL')
  assert.deepEqual(problems, [])
  await page.close()
})

test('a row inserted with psql appears, and a broadcast from the page reaches supabase-js', async () => {
  const { page, problems } = await inspector(tokens.alice)
  await joinChannel(page, 'inspect:notes', 'inspector_notes')
  execFileSync('psql', [process.env.DATABASE_URL, '-X', '-q', '-c', "INSERT INTO public.inspector_notes (body) VALUES ('seen in the browser')"])
  const row = await eventRow(page, 'postgres_changes', 'INSERT', 'seen in the browser')
  assert.match(row, /inspect:notes/)

  // A supabase-js subscriber on the other gateway gets what the page sends.
  const inbox = new Inbox()
  const client = supabase({ gateway: 1, token: tokens.bob })
  await subscribed(client.channel('inspect:notes').on('broadcast', { event: 'hello' }, inbox.push))
  await page.selectOption('#broadcast-channel', 'realtime:inspect:notes')
  await page.fill('#broadcast-event', 'hello')
  await page.fill('#broadcast-payload', '{"text": "from the inspector"}')
  await page.click('#broadcast-button')
  const got = await inbox.find((m) => m.payload?.text === 'from the inspector')
  assert.equal(got.event, 'hello')
  // The page sees its own broadcast (self: true) in the table.
  await eventRow(page, 'broadcast', 'hello', 'from the inspector')
  assert.deepEqual(problems, [])
  await page.close()
})

test('the events table can be filtered, paused and expanded, and shows markup as text', async () => {
  const { page, problems } = await inspector(tokens.alice)
  await joinChannel(page, 'inspect:table')
  const send = async (event, payload) => {
    await page.fill('#broadcast-event', event)
    await page.fill('#broadcast-payload', JSON.stringify(payload))
    await page.click('#broadcast-button')
  }
  const hostile = '<img src=x onerror="window.hacked=1">'
  await send('markup', { html: hostile })
  await eventRow(page, 'markup')
  assert.equal(await page.locator('#events img').count(), 0, 'no element was made from the payload')
  assert.equal(await page.evaluate(() => window.hacked), undefined)

  // Expanding a row shows its JSON.
  await page.locator('#events tr.summary', { hasText: 'markup' }).first().click()
  const detail = page.locator('#events tr.detail:not([hidden]) pre').first()
  assert.equal(JSON.parse(await detail.innerText()).html, hostile)

  // Paused: new events are held, then shown on resume.
  await page.click('#pause-button')
  await send('while-paused', { n: 1 })
  await page.locator('#events-count', { hasText: '1 held while paused' }).waitFor({ timeout: TIMEOUT })
  assert.equal(await page.locator('#events tr.summary', { hasText: 'while-paused' }).count(), 0)
  await page.click('#pause-button')
  await eventRow(page, 'while-paused')

  // The filter keeps the matching rows only.
  await page.fill('#events-filter', 'while-paused')
  const shown = await page.locator('#events tr.summary').allInnerTexts()
  assert.ok(shown.length >= 1 && shown.every((row) => row.includes('while-paused')), JSON.stringify(shown))

  // From the keyboard: a focused row opens with Enter.
  const row = page.locator('#events tr.summary').first()
  await row.focus()
  await page.keyboard.press('Enter')
  assert.equal(await row.getAttribute('aria-expanded'), 'true')
  assert.deepEqual(problems, [])
  await page.close()
})

test('a refused join is shown with the reason the gateway gave', async () => {
  const { page, problems } = await inspector(tokens.alice)
  await page.fill('#join-name', 'inspect:secret')
  await page.check('#join-private')
  await page.click('#join-button')
  const row = await eventRow(page, 'join refused')
  assert.match(row, /Unauthorized: You do not have permissions to read from this Channel topic: inspect:secret/)
  assert.equal(await page.locator('#joined .chip').count(), 0)
  assert.deepEqual(problems, [])
  await page.close()
})

test('presence tracked from the page lists its members and reaches supabase-js', async () => {
  const { page, problems } = await inspector(tokens.alice)
  await page.fill('#join-key', 'alice-inspector')
  await joinChannel(page, 'inspect:presence')
  const inbox = new Inbox()
  const client = supabase({ gateway: 1, token: tokens.bob })
  const channel = client.channel('inspect:presence')
  channel.on('presence', { event: 'join' }, inbox.push)
  await subscribed(channel)
  await page.selectOption('#presence-channel', 'realtime:inspect:presence')
  await page.fill('#presence-state', '{"status": "reviewing"}')
  await page.click('#track-button')
  await page.locator('#members li', { hasText: 'alice-inspector' }).waitFor({ timeout: TIMEOUT })
  assert.match(await page.locator('#members').innerText(), /reviewing/)
  const joined = await inbox.find((e) => e.key === 'alice-inspector')
  assert.equal(joined.newPresences[0].status, 'reviewing')
  await page.click('#untrack-button')
  await page.locator('#members li', { hasText: 'Nobody tracked' }).waitFor({ timeout: TIMEOUT })
  assert.deepEqual(problems, [])
  await page.close()
})

test('with a service_role token the cluster view lists both gateways and the CDC', async () => {
  const { page, problems } = await inspector(SERVICE_KEY)
  await page.click('button.tab[data-view="cluster"]')
  await page.waitForFunction(() => document.querySelectorAll('#gateways tr').length === 2, null, { timeout: TIMEOUT })
  await page.locator('#cdcs tr', { hasText: 'leader' }).waitFor({ timeout: TIMEOUT })
  const gateways = await page.locator('#gateways tr').allInnerTexts()
  assert.equal(new Set(gateways.map((row) => row.split('\t')[0])).size, 2, JSON.stringify(gateways))
  if (process.env.INSPECTOR_SCREENSHOT) {
    // The README's picture: a channel with events, from a second page that joined one.
    const shot = await inspector(tokens.alice)
    await joinChannel(shot.page, 'room:lobby', 'inspector_notes')
    execFileSync('psql', [process.env.DATABASE_URL, '-X', '-q', '-c', "INSERT INTO public.inspector_notes (body) VALUES ('hello from psql')"])
    await eventRow(shot.page, 'hello from psql')
    await shot.page.fill('#broadcast-event', 'message')
    await shot.page.click('#broadcast-button')
    await eventRow(shot.page, 'broadcast', 'message')
    await shot.page.setViewportSize({ width: 1280, height: 1000 })
    await shot.page.evaluate(() => window.scrollTo(0, 0))
    await shot.page.screenshot({ path: process.env.INSPECTOR_SCREENSHOT, fullPage: false })
    await shot.page.close()
  }
  // A token that is not service_role gets no cluster view.
  const plain = await inspector(tokens.alice)
  await plain.page.click('button.tab[data-view="cluster"]')
  assert.equal(await plain.page.locator('#cluster').isHidden(), true)
  assert.deepEqual(problems, [])
  await page.close()
  await plain.page.close()
})

test('the Get started screen shows this gateway\'s endpoints and snippets', async () => {
  const { page, problems } = await inspector(tokens.alice)
  await page.click('button.tab[data-view="start"]')
  const endpoints = await page.locator('#endpoints').innerText()
  assert.match(endpoints, new RegExp(`${GATEWAYS[0].replace(/^http/, 'ws')}/realtime/v1/websocket`))
  const snippets = await page.locator('#snippets pre').allInnerTexts()
  assert.ok(snippets.some((s) => s.includes("import { createClient } from '@supabase/supabase-js'")), snippets.join('\n---\n'))
  assert.deepEqual(problems, [])
  await page.close()
})
