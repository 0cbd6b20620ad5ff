// A newcomer's first minutes with the inspector under `nself-realtime up` (started by
// tests/tests/up.rs): the page offers the demo user token, and every client snippet of its
// "Get started" screen runs as shown: supabase-js (Node 22, no transport) receives a broadcast
// sent from the page, the psql line inserts a row the page then shows, socket.io-client joins
// and sends, the /ws snippet subscribes.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { writeFileSync, rmSync } from 'node:fs'
import { chromium } from 'playwright-core'

const URL = process.env.INSPECTOR_URL
const NODE22 = process.env.NODE22
const TIMEOUT = 15000
let browser
let page
const cleanups = []

before(async () => {
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] })
  page = await browser.newPage()
  await page.goto(`${URL}/`)
})

after(async () => {
  for (const cleanup of cleanups) cleanup()
  await browser?.close()
})

// Runs `source` as an ES module with `node`, from this folder (so it finds tests/js's packages);
// resolves with a reader that waits for a line matching a pattern.
function run(node, source, name) {
  const file = new globalThis.URL(`./.snippet-${process.pid}-${name}.mjs`, import.meta.url)
  writeFileSync(file, source)
  const child = spawn(node, [file.pathname], { stdio: ['ignore', 'pipe', 'pipe'] })
  cleanups.push(() => { child.kill(); rmSync(file, { force: true }) })
  let output = ''
  const waiters = []
  const onData = (data) => {
    output += data
    for (const waiter of [...waiters]) waiter()
  }
  child.stdout.on('data', onData)
  child.stderr.on('data', onData)
  return {
    output: () => output,
    waitFor: (pattern) => new Promise((resolve, reject) => {
      const check = () => {
        if (pattern.test(output)) {
          waiters.splice(waiters.indexOf(check), 1)
          clearTimeout(timer)
          resolve(output)
        }
      }
      const timer = setTimeout(() => reject(new Error(`${name}: no ${pattern} within ${TIMEOUT} ms; output:\n${output}`)), TIMEOUT)
      waiters.push(check)
      check()
    }),
  }
}

async function snippet(title) {
  return page.locator('.snippet', { has: page.locator('h3', { hasText: title }) }).locator('pre').innerText()
}

test('the page offers the demo user token that up printed', async () => {
  await page.getByRole('button', { name: 'Use the demo user token' }).click()
  await page.waitForSelector('#status.ok', { timeout: TIMEOUT })
  assert.match(await page.locator('#status').innerText(), /demo-user/)
  assert.equal(new globalThis.URL(page.url()).search, '', 'no token in the page URL')
})

test('the supabase-js snippet runs as shown and receives a broadcast from the page', async () => {
  await page.click('button.tab[data-view="start"]')
  const client = run(NODE22, await snippet('supabase-js'), 'supabase')
  await client.waitFor(/SUBSCRIBED/)
  await page.click('button.tab[data-view="channels"]')
  await page.fill('#join-name', 'room:lobby')
  await page.click('#join-button')
  await page.locator('#joined .chip', { hasText: 'room:lobby · joined' }).waitFor({ timeout: TIMEOUT })
  await page.selectOption('#broadcast-channel', 'realtime:room:lobby')
  await page.fill('#broadcast-payload', '{"text": "from the inspector"}')
  await page.click('#broadcast-button')
  await client.waitFor(/from the inspector/)
})

test('the psql snippet inserts a row the page shows', async () => {
  await page.fill('#join-name', 'todos')
  await page.fill('#pg-table', 'todos')
  await page.click('#join-button')
  await page.locator('#joined .chip', { hasText: 'todos · joined' }).waitFor({ timeout: TIMEOUT })
  await page.click('button.tab[data-view="start"]')
  const psql = await snippet('psql')
  execFileSync('sh', ['-c', psql])
  await page.click('button.tab[data-view="channels"]')
  await page.locator('#events tr.summary', { hasText: 'INSERT' }).filter({ hasText: 'hello' }).first().waitFor({ timeout: TIMEOUT })
})

test('the socket.io-client and /ws snippets run as shown', async () => {
  await page.click('button.tab[data-view="start"]')
  const socketio = run(process.execPath, await snippet('socket.io-client'), 'socketio')
  await socketio.waitFor(/ok: true/)
  const ws = run(NODE22, await snippet('/ws'), 'ws')
  await ws.waitFor(/"request":"subscribe"/)
})
