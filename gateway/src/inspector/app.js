// The inspector's page logic (see gateway/src/inspector/mod.rs): a small Phoenix client (the
// protocol supabase-js speaks, vsn 1.0.0 JSON) for joining channels, watching their events,
// sending broadcasts and tracking presence; the cluster view over POST /api/control; and the
// "Get started" screen with this gateway's endpoints and client snippets.
//
// Every value shown comes from the network, so the page only ever sets textContent (never
// innerHTML). The token lives in `state.token` only: no storage, no URL of the page.
'use strict'

const $ = (id) => document.getElementById(id)
const HEARTBEAT_MS = 25000
const MAX_EVENTS = 2000
const CLUSTER_REFRESH_MS = 2000
const CHART_POINTS = 150 // five minutes at one point per two seconds

const state = {
  token: null,
  claims: null,
  socket: null,
  ref: 0,
  heartbeat: null,
  channels: new Map(), // topic -> { name, joinRef, status, presence: Map(key -> metas) }
  pending: new Map(), // ref -> callback(reply payload)
  events: [],
  paused: false,
  held: [],
  welcome: null,
  clusterTimer: null,
  series: [], // { at, messages, connections }
  lastTotals: null,
}

// ---- small DOM helpers (text only) ----------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes)) {
    if (name === 'class') node.className = value
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value)
    else node.setAttribute(name, value)
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return node
}

function setStatus(text, kind = '') {
  const status = $('status')
  status.textContent = text
  status.className = kind
}

function claimsOf(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    return JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)))
  } catch {
    return null
  }
}

function parseJson(text, what) {
  try {
    return JSON.parse(text)
  } catch (e) {
    throw new Error(`${what} is not JSON: ${e.message}`)
  }
}

// ---- the Phoenix connection -----------------------------------------------------------------

function socketUrl(token) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${scheme}//${location.host}/realtime/v1/websocket?apikey=${encodeURIComponent(token)}&vsn=1.0.0`
}

function push(topic, event, payload, joinRef = null) {
  const ref = String(++state.ref)
  state.socket.send(JSON.stringify({ topic, event, payload, ref, join_ref: joinRef }))
  return ref
}

function request(topic, event, payload, joinRef) {
  return new Promise((resolve) => {
    const ref = push(topic, event, payload, joinRef)
    state.pending.set(ref, resolve)
  })
}

function connect(token) {
  disconnect()
  state.token = token
  state.claims = claimsOf(token)
  setStatus('Connecting…')
  const socket = new WebSocket(socketUrl(token))
  state.socket = socket
  socket.addEventListener('open', () => {
    setStatus(`Connected as ${describeClaims(state.claims)}`, 'ok')
    $('identity').textContent = `role ${state.claims?.role ?? '(none)'}${state.claims?.sub ? `, sub ${state.claims.sub}` : ''}${state.claims?.exp ? `, expires ${new Date(state.claims.exp * 1000).toLocaleString()}` : ''}`
    state.heartbeat = setInterval(() => push('phoenix', 'heartbeat', {}), HEARTBEAT_MS)
    setConnected(true)
    startCluster()
  })
  socket.addEventListener('message', (message) => receive(JSON.parse(message.data)))
  socket.addEventListener('close', (close) => {
    if (state.socket !== socket) return
    const why = close.reason ? `: ${close.reason}` : close.code === 1006 ? ' (the gateway refused the connection or went away: check the token)' : ''
    setStatus(`Disconnected${why}`, close.code === 1000 ? '' : 'error')
    cleanUp()
  })
}

function describeClaims(claims) {
  if (!claims) return 'an unreadable token'
  return claims.sub ? `${claims.sub} (${claims.role ?? 'no role'})` : (claims.role ?? 'no role')
}

function disconnect() {
  if (state.socket) {
    const socket = state.socket
    state.socket = null
    socket.close(1000)
    setStatus('Not connected')
  }
  cleanUp()
}

function cleanUp() {
  clearInterval(state.heartbeat)
  stopCluster()
  state.socket = null
  state.channels.clear()
  state.pending.clear()
  setConnected(false)
  renderChannels()
}

function setConnected(connected) {
  // Connected, the token is out of sight (it stays in memory for joins and the control API).
  $('connect').classList.toggle('connected', connected)
  for (const id of ['join-button', 'broadcast-button', 'track-button', 'untrack-button']) $(id).disabled = !connected
  $('disconnect-button').disabled = !connected
}

function receive(frame) {
  const { topic, event, payload, ref } = frame
  if (event === 'phx_reply' && state.pending.has(ref)) {
    // The request that waits for this reply reports it.
    const resolve = state.pending.get(ref)
    state.pending.delete(ref)
    resolve(payload)
    return
  }
  if (topic === 'phoenix') return
  const channel = state.channels.get(topic)
  const name = channel?.name ?? topic.replace(/^realtime:/, '')
  switch (event) {
    case 'broadcast':
      record(name, 'broadcast', payload.event, payload.payload ?? payload)
      break
    case 'presence_state':
      if (channel) {
        channel.presence = new Map(Object.entries(payload).map(([key, value]) => [key, value.metas ?? []]))
        renderMembers()
      }
      record(name, 'presence', 'state', payload)
      break
    case 'presence_diff':
      if (channel) applyDiff(channel.presence, payload)
      renderMembers()
      record(name, 'presence', presenceEvent(payload), payload)
      break
    case 'postgres_changes':
      record(name, 'postgres_changes', payload.data?.type ?? 'change', payload.data ?? payload,
        payload.data?.record ?? payload.data?.old_record ?? payload.data ?? payload)
      break
    case 'system':
      record(name, 'system', payload.status ?? 'system', payload)
      break
    case 'phx_close':
    case 'phx_error':
      if (channel) {
        channel.status = event === 'phx_error' ? 'error' : 'closed'
        state.channels.delete(topic)
        renderChannels()
      }
      record(name, 'system', event, payload)
      break
    case 'phx_reply':
      if (payload.status !== 'ok') record(name, 'error', 'reply', payload.response ?? payload)
      break
    default:
      record(name, 'system', event, payload)
  }
}

function presenceEvent(diff) {
  const joins = Object.keys(diff.joins ?? {}).length
  const leaves = Object.keys(diff.leaves ?? {}).length
  return joins && leaves ? 'join+leave' : joins ? 'join' : 'leave'
}

// Phoenix presence: a key's metas are added on join and removed by phx_ref on leave.
function applyDiff(presence, diff) {
  for (const [key, { metas }] of Object.entries(diff.joins ?? {})) {
    const known = presence.get(key) ?? []
    const refs = new Set(known.map((m) => m.phx_ref))
    presence.set(key, known.concat(metas.filter((m) => !refs.has(m.phx_ref))))
  }
  for (const [key, { metas }] of Object.entries(diff.leaves ?? {})) {
    const gone = new Set(metas.map((m) => m.phx_ref))
    const left = (presence.get(key) ?? []).filter((m) => !gone.has(m.phx_ref))
    if (left.length) presence.set(key, left)
    else presence.delete(key)
  }
}

// ---- channels -------------------------------------------------------------------------------

async function join(form) {
  const name = $('join-name').value.trim()
  if (!name) return
  const topic = `realtime:${name}`
  if (state.channels.has(topic)) return
  const table = $('pg-table').value.trim()
  const changes = table
    ? [{ event: $('pg-event').value, schema: $('pg-schema').value.trim() || 'public', table, ...($('pg-filter').value.trim() ? { filter: $('pg-filter').value.trim() } : {}) }]
    : []
  const payload = {
    config: {
      broadcast: { self: true, ack: true },
      presence: { key: $('join-key').value.trim(), enabled: true },
      postgres_changes: changes,
      private: $('join-private').checked,
    },
    access_token: state.token,
  }
  const ref = String(state.ref + 1)
  const channel = { name, joinRef: ref, status: 'joining', presence: new Map() }
  state.channels.set(topic, channel)
  renderChannels()
  const reply = await request(topic, 'phx_join', payload, ref)
  if (reply.status === 'ok') {
    channel.status = 'joined'
    record(name, 'reply', 'joined', reply.response ?? {})
  } else {
    state.channels.delete(topic)
    record(name, 'error', 'join refused', reply.response ?? reply)
  }
  renderChannels()
}

async function leave(topic) {
  const channel = state.channels.get(topic)
  if (!channel) return
  state.channels.delete(topic)
  renderChannels()
  await request(topic, 'phx_leave', {}, channel.joinRef)
}

function chosen(selectId) {
  const topic = $(selectId).value
  const channel = state.channels.get(topic)
  if (!channel) throw new Error('join a channel first')
  return [topic, channel]
}

async function sendBroadcast() {
  const [topic, channel] = chosen('broadcast-channel')
  const payload = parseJson($('broadcast-payload').value, 'the payload')
  const event = $('broadcast-event').value.trim()
  const reply = await request(topic, 'broadcast', { type: 'broadcast', event, payload }, channel.joinRef)
  if (reply.status !== 'ok') record(channel.name, 'error', 'broadcast refused', reply.response ?? reply)
}

async function track(untrack) {
  const [topic, channel] = chosen('presence-channel')
  const payload = untrack
    ? { type: 'presence', event: 'untrack' }
    : { type: 'presence', event: 'track', payload: parseJson($('presence-state').value, 'the state') }
  const reply = await request(topic, 'presence', payload, channel.joinRef)
  if (reply.status !== 'ok') record(channel.name, 'error', untrack ? 'untrack refused' : 'track refused', reply.response ?? reply)
}

function renderChannels() {
  const joined = $('joined')
  joined.replaceChildren()
  for (const [topic, channel] of state.channels) {
    joined.append(el('span', { class: `chip ${channel.status === 'error' ? 'error' : ''}` },
      `${channel.name} · ${channel.status}`,
      el('button', { type: 'button', 'aria-label': `Leave ${channel.name}`, onclick: () => leave(topic) }, '×')))
  }
  for (const select of document.querySelectorAll('.channel-choice')) {
    const before = select.value
    select.replaceChildren(...[...state.channels].map(([topic, c]) => el('option', { value: topic }, c.name)))
    if (state.channels.has(before)) select.value = before
  }
  renderMembers()
}

function renderMembers() {
  const list = $('members')
  const channel = state.channels.get($('presence-channel').value)
  if (!channel) {
    list.replaceChildren(el('li', { class: 'muted' }, 'No channel joined'))
    return
  }
  const items = [...channel.presence].flatMap(([key, metas]) =>
    metas.map((meta) => {
      const { phx_ref: _ref, ...shown } = meta
      return el('li', {}, `${key}  ${JSON.stringify(shown)}`)
    }))
  list.replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, 'Nobody tracked')]))
}

// ---- the events table -----------------------------------------------------------------------

// One event for the table; `summary` is what its row shows (the row's detail shows `payload`).
function record(channel, type, event, payload, summary = payload) {
  const entry = { at: new Date(), channel, type, event: String(event ?? ''), payload, summary }
  if (state.paused) {
    state.held.push(entry)
    renderCount()
  } else {
    state.events.push(entry)
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS)
    renderEvents()
  }
}

function matches(entry, filter) {
  if (!filter) return true
  const text = `${entry.channel} ${entry.type} ${entry.event} ${JSON.stringify(entry.payload)}`.toLowerCase()
  return text.includes(filter)
}

function renderEvents() {
  const filter = $('events-filter').value.trim().toLowerCase()
  const shown = state.events.filter((e) => matches(e, filter))
  const rows = []
  for (const entry of shown.slice(-500).reverse()) {
    const detail = el('tr', { class: 'detail', hidden: '' },
      el('td', { colspan: '5' }, el('pre', {}, JSON.stringify(entry.payload, null, 2))))
    const summary = el('tr', { class: 'summary', tabindex: '0', 'aria-expanded': 'false' },
      el('td', {}, entry.at.toLocaleTimeString()),
      el('td', {}, entry.channel),
      el('td', { class: `type-${entry.type}` }, entry.type),
      el('td', {}, entry.event),
      el('td', { class: 'payload' }, JSON.stringify(entry.summary)))
    const toggle = () => {
      detail.hidden = !detail.hidden
      summary.setAttribute('aria-expanded', String(!detail.hidden))
    }
    summary.addEventListener('click', toggle)
    summary.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); toggle() } })
    rows.push(summary, detail)
  }
  $('events').replaceChildren(...rows)
  renderCount(shown.length)
}

function renderCount(shown = $('events').querySelectorAll('tr.summary').length) {
  const held = state.held.length ? `, ${state.held.length} held while paused` : ''
  $('events-count').textContent = `${shown} of ${state.events.length} shown${held}`
}

function setPaused(paused) {
  state.paused = paused
  $('pause-button').setAttribute('aria-pressed', String(paused))
  $('pause-button').textContent = paused ? 'Resume' : 'Pause'
  if (!paused) {
    state.events.push(...state.held.splice(0))
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS)
  }
  renderEvents()
}

// ---- the cluster view -----------------------------------------------------------------------

function startCluster() {
  stopCluster()
  if (state.claims?.role !== 'service_role') {
    $('cluster-note').textContent = 'Connect with a service_role token to see every gateway and the CDC (the control API).'
    $('cluster').hidden = true
    return
  }
  $('cluster-note').textContent = 'Every gateway and CDC on the bus, refreshed every 2 s.'
  $('cluster').hidden = false
  state.series = []
  state.lastTotals = null
  refreshCluster()
  state.clusterTimer = setInterval(refreshCluster, CLUSTER_REFRESH_MS)
}

function stopCluster() {
  clearInterval(state.clusterTimer)
  state.clusterTimer = null
}

async function refreshCluster() {
  let answer
  try {
    const response = await fetch('/api/control', {
      method: 'POST',
      headers: { Authorization: `Bearer ${state.token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ verb: 'cluster' }),
    })
    answer = await response.json()
    if (!response.ok) throw new Error(answer.error ?? answer.message ?? response.statusText)
  } catch (e) {
    $('cluster-note').textContent = `The control API did not answer: ${e.message}`
    return
  }
  renderCluster(answer.result)
}

function renderCluster({ gateways, cdc }) {
  $('gateways').replaceChildren(...gateways.map((g) => el('tr', {},
    el('td', {}, g.gateway), el('td', {}, duration(g.uptime_seconds)),
    el('td', {}, `${g.connections.active} (peak ${g.connections.peak})`),
    el('td', {}, Object.entries(g.connections.by_protocol ?? {}).map(([p, n]) => `${p} ${n}`).join(', ') || '—'),
    el('td', {}, g.channels.active), el('td', {}, g.messages.total))))
  $('cdcs').replaceChildren(...(cdc.length ? cdc : [null]).map((c) => c
    ? el('tr', {}, el('td', {}, c.id), el('td', {}, c.role), el('td', {}, c.status),
      el('td', {}, `${c.slot}${c.slot_active ? ' (active)' : ''}`),
      el('td', {}, c.lag_bytes == null ? '—' : bytes(c.lag_bytes)),
      el('td', {}, c.postgres?.connected ? 'connected' : `down${c.postgres?.error ? `: ${c.postgres.error}` : ''}`),
      el('td', {}, c.nats?.in_process ? 'in process' : c.nats?.connected ? 'connected' : 'down'))
    : el('tr', {}, el('td', { colspan: '7', class: 'muted' }, 'No CDC answered on the bus'))))
  const members = new Map()
  for (const g of gateways) {
    for (const [name, count] of Object.entries(g.channels.by_name ?? {})) members.set(name, (members.get(name) ?? 0) + count)
  }
  $('channels').replaceChildren(...([...members].sort().map(([name, count]) => el('tr', {}, el('td', {}, name), el('td', {}, count)))))
  const totals = {
    at: Date.now(),
    messages: gateways.reduce((sum, g) => sum + (g.messages.total ?? 0), 0),
    connections: gateways.reduce((sum, g) => sum + (g.connections.active ?? 0), 0),
  }
  if (state.lastTotals) {
    const seconds = (totals.at - state.lastTotals.at) / 1000
    const rate = seconds > 0 ? Math.max(0, totals.messages - state.lastTotals.messages) / seconds : 0
    state.series.push({ messages: rate, connections: totals.connections })
    if (state.series.length > CHART_POINTS) state.series.shift()
  }
  state.lastTotals = totals
  drawChart()
}

function duration(seconds) {
  if (seconds < 120) return `${seconds} s`
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`
  return `${Math.floor(seconds / 3600)} h`
}

function bytes(n) {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`
}

function drawChart() {
  const canvas = $('chart')
  const context = canvas.getContext('2d')
  const { width, height } = canvas
  context.clearRect(0, 0, width, height)
  const style = getComputedStyle(document.documentElement)
  context.font = '12px system-ui, sans-serif'
  context.fillStyle = style.getPropertyValue('--muted')
  const series = state.series
  if (series.length < 2) {
    context.fillText('collecting…', 12, 20)
    return
  }
  const line = (key, color, label, y) => {
    const max = Math.max(1, ...series.map((p) => p[key]))
    context.strokeStyle = color
    context.lineWidth = 2
    context.beginPath()
    series.forEach((p, i) => {
      const x = 8 + (i / (CHART_POINTS - 1)) * (width - 16)
      const yy = height - 18 - (p[key] / max) * (height - 40)
      if (i === 0) context.moveTo(x, yy)
      else context.lineTo(x, yy)
    })
    context.stroke()
    context.fillStyle = color
    const last = series[series.length - 1][key]
    context.fillText(`${label}: ${key === 'messages' ? last.toFixed(1) : last} (max ${key === 'messages' ? max.toFixed(1) : max})`, 12, y)
  }
  line('messages', style.getPropertyValue('--messages'), 'messages/s', 16)
  line('connections', style.getPropertyValue('--connections'), 'connections', 32)
}

// ---- the "Get started" screen ---------------------------------------------------------------

async function loadWelcome() {
  try {
    const response = await fetch('/inspector/welcome')
    state.welcome = await response.json()
  } catch {
    state.welcome = { offered: false, why: 'the gateway did not answer /inspector/welcome' }
  }
  const offers = $('offers')
  offers.replaceChildren()
  if (state.welcome.offered) {
    const use = (label, token) => el('button', { type: 'button', onclick: () => { $('token').value = token; connect(token) } }, label)
    offers.append(use('Use the demo user token', state.welcome.demo_token), use('Use the service key', state.welcome.service_key))
  }
  renderStart()
}

function renderStart() {
  const http = `${location.protocol}//${location.host}`
  const ws = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}`
  const welcome = state.welcome ?? { offered: false }
  $('welcome-note').textContent = welcome.offered
    ? 'These are the keys `nself-realtime up` printed; this page offers them to a browser on the same machine only.'
    : `Keys are not shown here: ${welcome.why ?? ''}`
  const anon = welcome.offered ? welcome.anon_key : '<anon key>'
  const token = welcome.offered ? welcome.demo_token : '<user token>'
  const endpoints = [
    ['Supabase URL', http],
    ['Phoenix WebSocket', `${ws}/realtime/v1/websocket`],
    ['Socket.IO', http],
    ['JSON WebSocket', `${ws}/ws`],
    ['REST broadcast', `${http}/realtime/v1/api/broadcast`],
  ]
  if (welcome.offered) {
    endpoints.push(['Postgres', welcome.postgres_url], ['CDC endpoint', welcome.cdc_url],
      ['anon key', welcome.anon_key], ['service key', welcome.service_key], ['demo user token', welcome.demo_token])
  }
  $('endpoints').replaceChildren(...endpoints.flatMap(([name, value]) => [el('dt', {}, name), el('dd', {}, value)]))
  const snippets = [
    ['supabase-js (a browser module, or Node 22)', [
      "import { createClient } from '@supabase/supabase-js'",
      '',
      `const supabase = createClient('${http}', '${anon}', {`,
      '  // Your own JWTs: supabase-js sends what this returns on connect and every heartbeat.',
      `  accessToken: async () => '${token}',`,
      '})',
      '// Ask for the token now: a channel subscribed before it arrives would join with the anon key.',
      'await supabase.realtime.setAuth()',
      '',
      "supabase.channel('room:lobby')",
      "  .on('broadcast', { event: '*' }, (message) => console.log(message))",
      '  .subscribe((status) => console.log(status))',
    ]],
    ['socket.io-client', [
      "import { io } from 'socket.io-client'",
      '',
      `const socket = io('${http}', { transports: ['websocket'], auth: { token: '${token}' } })`,
      "socket.on('message:new', (message) => console.log(message.userId, message.content))",
      "const joined = await socket.emitWithAck('room:join', { roomName: 'general' })",
      'console.log(joined)',
      "console.log(await socket.emitWithAck('message:send', { roomName: 'general', content: 'hi' }))",
    ]],
    ['JSON WebSocket (/ws)', [
      `const ws = new WebSocket('${ws}/ws')`,
      "ws.onmessage = (message) => console.log(message.data)",
      'ws.onopen = () => {',
      `  ws.send(JSON.stringify({ type: 'auth', token: '${token}', id: 1 }))`,
      "  ws.send(JSON.stringify({ type: 'subscribe', channel: 'general', id: 2 }))",
      '}',
    ]],
  ]
  if (welcome.offered) {
    snippets.push(['psql (a row the demo user sees)', [
      `psql "${welcome.postgres_url}" -c "INSERT INTO todos (task, user_id) VALUES ('hello', 'demo-user')"`,
    ]])
  }
  $('snippets').replaceChildren(...snippets.map(([title, lines]) => {
    const text = lines.join('\n')
    const pre = el('pre', {}, el('code', {}, text))
    const copy = el('button', { type: 'button' }, 'Copy')
    copy.addEventListener('click', async () => {
      try {
        await navigator.clipboard.writeText(text)
        copy.textContent = 'Copied'
      } catch {
        getSelection().selectAllChildren(pre)
        copy.textContent = 'Selected: press Ctrl-C'
      }
      setTimeout(() => { copy.textContent = 'Copy' }, 2000)
    })
    return el('div', { class: 'snippet' }, el('div', { class: 'row' }, el('h3', {}, title), copy), pre)
  }))
}

// ---- wiring ---------------------------------------------------------------------------------

function showView(name) {
  for (const tab of document.querySelectorAll('.tab')) tab.setAttribute('aria-pressed', String(tab.dataset.view === name))
  for (const view of document.querySelectorAll('.view')) view.hidden = view.id !== `view-${name}`
}

function guard(action) {
  return async (event) => {
    event?.preventDefault?.()
    try {
      await action(event)
    } catch (e) {
      record('-', 'error', 'inspector', { message: e.message })
    }
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('connect-form').addEventListener('submit', guard(() => {
    const token = $('token').value.trim()
    if (token) connect(token)
  }))
  $('disconnect-button').addEventListener('click', guard(() => disconnect()))
  $('join-form').addEventListener('submit', guard(() => join()))
  $('broadcast-form').addEventListener('submit', guard(() => sendBroadcast()))
  $('presence-form').addEventListener('submit', guard(() => track(false)))
  $('untrack-button').addEventListener('click', guard(() => track(true)))
  $('presence-channel').addEventListener('change', renderMembers)
  $('events-filter').addEventListener('input', renderEvents)
  $('pause-button').addEventListener('click', () => setPaused(!state.paused))
  $('clear-button').addEventListener('click', () => { state.events = []; state.held = []; renderEvents() })
  for (const tab of document.querySelectorAll('.tab')) tab.addEventListener('click', () => showView(tab.dataset.view))
  setConnected(false)
  renderEvents()
  loadWelcome()
})
