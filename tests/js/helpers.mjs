// Shared setup for the JS client tests: the stack's addresses and tokens come from the
// environment that tests/tests/js_clients.rs sets after starting Postgres, NATS, the CDC and
// two gateways; these helpers make real clients from npm against them.
import WebSocket from 'ws'
import pg from 'pg'

export const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run these tests through tests/tests/js_clients.rs`)
  return value
}

export const GATEWAYS = [env('GATEWAY_A'), env('GATEWAY_B')]
export const ANON_KEY = env('ANON_KEY')
export const SERVICE_KEY = env('SERVICE_KEY')
export const tokens = JSON.parse(env('TOKENS'))
export const userIds = JSON.parse(env('USER_IDS'))

// The one place that picks the supabase-js under test: js_clients.rs runs the suite once with
// '@supabase/supabase-js' (the pinned version) and once with 'supabase-js-latest' (an npm alias
// of the newest 2.x, package.json) under Node 22, naming it in SUPABASE_JS_PACKAGE.
const { createClient } = await import(process.env.SUPABASE_JS_PACKAGE ?? '@supabase/supabase-js')

const clients = []

// A supabase-js client on gateway `index` acting with `token` (the user's JWT), speaking `vsn`.
// Node 20 has no global WebSocket, so there ws's class is passed as the transport (DESIGN.md);
// Node 22 has one, and realtime-js uses it when given no transport, as in a browser.
//
// The `accessToken` option keeps the token on every heartbeat's refresh, but it resolves only
// after the current tick: a channel subscribed right after `createClient` would join with the
// apikey's role (realtime-js evaluates the join payload when `subscribe()` is called), against
// Supabase as against us. `realtime.setAuth(token)` takes effect at once.
export function supabase({ gateway = 0, token, vsn = '2.0.0', apikey = ANON_KEY } = {}) {
  const options = { realtime: { vsn, heartbeatIntervalMs: 5000 } }
  if (typeof globalThis.WebSocket === 'undefined') options.realtime.transport = WebSocket
  if (token) options.accessToken = async () => token
  const client = createClient(GATEWAYS[gateway], apikey, options)
  if (token) client.realtime.setAuth(token)
  clients.push(client)
  return client
}

export async function closeAll() {
  for (const client of clients.splice(0)) {
    await client.removeAllChannels()
    client.realtime.disconnect()
  }
}

let db
export async function sql(text, params = []) {
  if (!db) {
    db = new pg.Client({ connectionString: env('DATABASE_URL') })
    await db.connect()
  }
  return (await db.query(text, params)).rows
}

export async function closeDb() {
  if (db) await db.end()
  db = undefined
}

// Subscribes and resolves with the channel once SUBSCRIBED; rejects on any other status.
export function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve(channel)
      else reject(new Error(`${channel.topic}: ${status} ${err ? err.message : ''}`))
    })
  })
}

// Collects events pushed to `push` and lets a test wait for a count or a predicate.
export class Inbox {
  constructor() {
    this.items = []
    this.waiters = []
  }

  push = (item) => {
    this.items.push(item)
    for (const waiter of [...this.waiters]) waiter()
  }

  // Resolves with the first item matching `predicate` (already received or future).
  async find(predicate, timeoutMs = 10000) {
    return this.until(() => this.items.find(predicate), timeoutMs)
  }

  // Resolves with all items once there are `count` of them.
  async count(count, timeoutMs = 10000) {
    return this.until(() => (this.items.length >= count ? this.items.slice(0, count) : undefined), timeoutMs)
  }

  until(check, timeoutMs) {
    return new Promise((resolve, reject) => {
      const attempt = () => {
        const found = check()
        if (found !== undefined) {
          cleanup()
          resolve(found)
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`timed out after ${timeoutMs} ms; received ${JSON.stringify(this.items).slice(0, 2000)}`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        this.waiters = this.waiters.filter((w) => w !== attempt)
      }
      this.waiters.push(attempt)
      attempt()
    })
  }
}

// Resolves after `ms` to check that nothing more arrives (used only for negative checks).
export const quietPeriod = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
