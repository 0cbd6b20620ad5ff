// examples/supabase-js.mjs: supabase-js follows `up`'s demo table as the demo user (own JWT).
// Prints SUBSCRIBED, then each change to the user's rows: INSERT {...,"task":"hello",...}
import { createClient } from '@supabase/supabase-js'

const url = process.env.REALTIME_URL ?? 'http://localhost:4000'
const [anonKey, userToken] = [process.env.ANON_KEY, process.env.USER_TOKEN]
if (!anonKey || !userToken) throw new Error('set ANON_KEY and USER_TOKEN (printed by `up`)')

const supabase = createClient(url, anonKey, {
  // Your own JWTs: supabase-js sends what this returns on connect and every heartbeat.
  accessToken: async () => userToken,
  // Node 20 has no WebSocket: give it ws's. Node 22 and browsers have their own.
  realtime: { transport: globalThis.WebSocket ?? (await import('ws')).default },
})
// Ask for the token now: a channel subscribed before it arrives would join with the anon key.
await supabase.realtime.setAuth()

supabase
  .channel('todos')
  .on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, (change) =>
    console.log(change.eventType, JSON.stringify(change.new)))
  .subscribe((status, err) => console.log(err ? `${status}: ${err.message}` : status))
