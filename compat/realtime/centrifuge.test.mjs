// centrifuge-js 5.x (over the `ws` package) against Herald's Centrifugo-compatible real-time
// gateway. Run by compat/run as the realtime-js suite with `node --test`.
//
// Needs HERALD_HTTP (the server's HTTP URL), HERALD_API_KEY (its admin/server-API key),
// HERALD_TEST_JWT_SECRET (the HMAC secret the server was started with as HERALD_JWT_SECRET) and
// HERALD_BIN (the binary: the restart test runs a server of its own, on a fixed port, so that
// centrifuge-js can reconnect to the same URL by itself).
//
// Every wait is bounded (WAIT_MS), every client is disconnected after its test, and the server
// the restart test starts is killed whatever happens.

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { test } from 'node:test'

import { Centrifuge } from 'centrifuge'
import jwt from 'jsonwebtoken'
import WebSocket from 'ws'

const HTTP = required('HERALD_HTTP').replace(/\/$/, '')
const API_KEY = required('HERALD_API_KEY')
const SECRET = required('HERALD_TEST_JWT_SECRET')
const HERALD_BIN = process.env.HERALD_BIN || ''

// The bound of every single wait (an event, a reply, a number of publications).
const WAIT_MS = 10000
// How long to keep listening after the expected publications arrived, to catch extra ones.
const SETTLE_MS = 500
// The subscription options of the seed's frontend: recovery on reconnect, positions, join/leave.
const FULL = { recoverable: true, positioned: true, joinLeave: true }

function required (name) {
  const v = process.env[name]
  if (!v) throw new Error(`${name} must be set (compat/run sets it)`)
  return v
}

const unique = prefix => `${prefix}_${randomBytes(5).toString('hex')}`
const wsUrl = base => `${base.replace(/^http/, 'ws')}/connection/websocket`
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i)
const nowSecs = () => Math.floor(Date.now() / 1000)

// --- tokens -----------------------------------------------------------------------------------

function mint (claims, secret = SECRET) {
  const now = nowSecs()
  return jwt.sign({ iat: now, exp: now + 3600, ...claims }, secret, { algorithm: 'HS256' })
}

const tenantToken = (user, extra = {}) => mint({ sub: user, tenant_id: 123, ...extra })

// jsonwebtoken refuses to sign with `alg: none`; the token is made by hand.
function unsignedToken (claims) {
  const b64 = obj => Buffer.from(JSON.stringify(obj)).toString('base64url')
  const now = nowSecs()
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iat: now, exp: now + 3600, ...claims })}.`
}

// --- waiting ----------------------------------------------------------------------------------

// Records the events of an emitter. Handlers only record: an exception escaping a centrifuge-js
// event handler stops the client.
class Recorder {
  constructor (emitter, events) {
    this.log = []
    for (const event of events) emitter.on(event, ctx => this.log.push({ event, ctx }))
  }

  all (event) {
    return this.log.filter(e => e.event === event).map(e => e.ctx)
  }

  // Waits until `count` events of the kind were recorded; returns all of them.
  async until (event, count, what, ms = WAIT_MS) {
    const deadline = Date.now() + ms
    while (this.all(event).length < count) {
      if (Date.now() > deadline) {
        assert.fail(`timed out after ${ms} ms waiting for ${what} (${this.all(event).length} of ` +
          `${count} '${event}' events; log: ${JSON.stringify(this.log.map(e => [e.event, e.ctx]))})`)
      }
      await sleep(20)
    }
    return this.all(event)
  }
}

async function waitUntil (what, predicate, ms = WAIT_MS) {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await predicate()
    if (v) return v
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`)
    await sleep(50)
  }
}

function withTimeout (promise, what, ms = WAIT_MS) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// The rejection of a promise that must fail (centrifuge-js rejects with {code, message}).
async function errorOf (promise, what) {
  let value
  try {
    value = await withTimeout(promise, what)
  } catch (e) {
    return e
  }
  assert.fail(`${what} succeeded (${JSON.stringify(value)}); an error was expected`)
}

// --- HTTP -------------------------------------------------------------------------------------

async function http (path, { method = 'GET', body, headers = {}, base = HTTP } = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS)
  })
  const text = await res.text()
  let json = null
  try { json = JSON.parse(text) } catch { /* not JSON: left to the caller */ }
  return { status: res.status, text, json, headers: res.headers }
}

// Centrifugo server API call that must succeed; returns its `result`.
async function api (method, body, { base = HTTP, key = API_KEY } = {}) {
  const r = await http(`/api/${method}`, { method: 'POST', body, base, headers: { 'X-API-Key': key } })
  assert.equal(r.status, 200, `/api/${method}: HTTP ${r.status} ${r.text}`)
  assert.ok(r.json && !r.json.error && r.json.result, `/api/${method}: ${r.text}`)
  return r.json.result
}

// Prometheus text format: [{labels, value}] of every sample of `name`.
function samples (text, name) {
  const out = []
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/)
    if (!m || m[1] !== name) continue
    const labels = {}
    for (const l of (m[2] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2]
    out.push({ labels, value: Number(m[3]) })
  }
  return out
}

const sum = list => list.reduce((s, x) => s + x.value, 0)

async function metricsText (base = HTTP) {
  const r = await http('/metrics', { base })
  assert.equal(r.status, 200, r.text)
  return r.text
}

async function summary () {
  const r = await http('/api/metrics/summary', { headers: { 'X-API-Key': API_KEY } })
  assert.equal(r.status, 200, r.text)
  assert.ok(r.json, `/api/metrics/summary is not JSON: ${r.text}`)
  return r.json
}

// --- clients ----------------------------------------------------------------------------------

// A client disconnected when the test ends. Its events are in client.rec.
function newClient (t, token, options = {}, base = HTTP) {
  const client = new Centrifuge(wsUrl(base), {
    token,
    websocket: WebSocket,
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
    ...options
  })
  client.rec = new Recorder(client, ['connecting', 'connected', 'disconnected', 'error'])
  t.after(() => client.disconnect())
  return client
}

async function connect (t, token, options = {}, base = HTTP) {
  const client = newClient(t, token, options, base)
  client.connect()
  try {
    await client.ready(WAIT_MS)
  } catch (e) {
    assert.fail(`connect failed: ${JSON.stringify(e)}; events: ${JSON.stringify(client.rec.log)}`)
  }
  return client
}

const SUB_EVENTS = ['subscribing', 'subscribed', 'unsubscribed', 'publication', 'join', 'leave', 'error']

// Subscribes and waits for the subscribed state; returns the subscription, its recorded events
// and the context of its subscribed event.
async function subscribe (client, channel, options = {}) {
  const sub = client.newSubscription(channel, options)
  const rec = new Recorder(sub, SUB_EVENTS)
  sub.subscribe()
  try {
    await sub.ready(WAIT_MS)
  } catch (e) {
    assert.fail(`subscribe to ${channel} failed: ${JSON.stringify(e)}; events: ${JSON.stringify(rec.log)}`)
  }
  return { sub, rec, subscribed: rec.all('subscribed')[0] }
}

// A subscribe the server refuses: centrifuge-js moves the subscription to unsubscribed with the
// server's error code (no 'error' event for a permanent error). Returns that context.
async function subscribeRefused (client, channel) {
  const sub = client.newSubscription(channel)
  const rec = new Recorder(sub, SUB_EVENTS)
  sub.subscribe()
  const [ctx] = await rec.until('unsubscribed', 1, `the refusal of the subscribe to ${channel}`)
  assert.equal(rec.all('subscribed').length, 0, `${channel} was subscribed`)
  assert.equal(sub.state, 'unsubscribed')
  client.removeSubscription(sub)
  return ctx
}

// --- the tests --------------------------------------------------------------------------------

test('connects with an HS256 token (tenant 123) and receives server API publications in order', async t => {
  const client = await connect(t, tenantToken(unique('js-user')))
  const [connected] = client.rec.all('connected')
  assert.ok(typeof connected.client === 'string' && connected.client.length > 0, JSON.stringify(connected))
  assert.equal(connected.transport, 'websocket')

  const channel = 'tenant:123:deployments'
  const { rec, subscribed } = await subscribe(client, channel, FULL)
  assert.equal(subscribed.channel, channel)
  assert.equal(subscribed.recoverable, true)
  assert.equal(subscribed.positioned, true)
  assert.equal(subscribed.wasRecovering, false)
  const { offset: top, epoch } = subscribed.streamPosition
  assert.ok(Number.isInteger(top) && top >= 0, JSON.stringify(subscribed))
  assert.ok(typeof epoch === 'string' && epoch.length > 0, `no epoch: ${JSON.stringify(subscribed)}`)

  const sent = range(0, 4).map(i => ({ type: 'deployment_progress', deploymentId: 'deploy-456', progress: i * 25 }))
  const results = []
  for (const data of sent) results.push(await api('publish', { channel, data }))
  assert.deepEqual(results.map(r => r.offset), range(top + 1, top + 5), JSON.stringify(results))
  for (const r of results) assert.equal(r.epoch, epoch, 'the publish result carries the stream epoch')

  await rec.until('publication', 5, 'five publications')
  await sleep(SETTLE_MS)
  const pubs = rec.all('publication')
  assert.equal(pubs.length, 5, 'each publication exactly once')
  assert.deepEqual(pubs.map(p => p.offset), range(top + 1, top + 5))
  assert.deepEqual(pubs.map(p => p.data), sent)
  for (const p of pubs) {
    assert.equal(p.channel, channel)
    // Server API publications have no publishing client.
    assert.equal(p.info, undefined, JSON.stringify(p))
  }
})

test('client publish into its own tenant channel reaches every subscriber with the publisher', async t => {
  const channel = `tenant:123:${unique('chat')}`
  const alice = unique('alice')
  const a = await connect(t, tenantToken(alice, { info: { name: 'Alice' } }))
  const b = await connect(t, tenantToken(unique('bob')))
  const sa = await subscribe(a, channel, FULL)
  const sb = await subscribe(b, channel, FULL)

  const data = { type: 'chat', text: 'deploy approved' }
  assert.deepEqual(await withTimeout(sa.sub.publish(data), 'publish'), {})
  for (const s of [sa, sb]) {
    const [pub] = await s.rec.until('publication', 1, 'the client publication')
    assert.deepEqual(pub.data, data)
    assert.equal(pub.offset, 1, 'first publication of a fresh channel')
    assert.ok(pub.info, `publication without client info: ${JSON.stringify(pub)}`)
    assert.equal(pub.info.user, alice)
    assert.equal(pub.info.client, a.rec.all('connected')[0].client)
    assert.deepEqual(pub.info.connInfo, { name: 'Alice' })
  }

  // Publishing is for subscribers: a channel of the same tenant not subscribed to is refused.
  const other = `tenant:123:${unique('chat')}`
  const err = await errorOf(a.publish(other, data), `publish to ${other} without subscribing`)
  assert.equal(err.code, 103, JSON.stringify(err))
})

test('presence, presenceStats and join/leave events', async t => {
  const channel = `tenant:123:${unique('presence')}`
  const alice = unique('alice')
  const bob = unique('bob')
  const a = await connect(t, tenantToken(alice, { info: { name: 'Alice' } }))
  const sa = await subscribe(a, channel, FULL)
  const aClient = a.rec.all('connected')[0].client

  const p1 = await withTimeout(sa.sub.presence(), 'presence')
  assert.deepEqual(Object.keys(p1.clients), [aClient])
  assert.equal(p1.clients[aClient].user, alice)
  assert.equal(p1.clients[aClient].client, aClient)
  assert.deepEqual(p1.clients[aClient].connInfo, { name: 'Alice' })
  assert.deepEqual(await withTimeout(sa.sub.presenceStats(), 'presenceStats'), { numClients: 1, numUsers: 1 })

  // A second user joins: the first client gets a join event with its info.
  const b = await connect(t, tenantToken(bob, { info: { name: 'Bob' } }))
  const bClient = b.rec.all('connected')[0].client
  const sb = await subscribe(b, channel, FULL)
  const [join] = await waitFor(sa.rec, 'join', j => j.info.user === bob, 'the join of the second client')
  assert.equal(join.channel, channel)
  assert.equal(join.info.client, bClient)
  assert.deepEqual(join.info.connInfo, { name: 'Bob' })

  // A second connection of the first user: three clients, two users.
  const a2 = await connect(t, tenantToken(alice, { info: { name: 'Alice' } }))
  await subscribe(a2, channel, FULL)
  assert.deepEqual(await withTimeout(sa.sub.presenceStats(), 'presenceStats'), { numClients: 3, numUsers: 2 })
  const p3 = await withTimeout(sa.sub.presence(), 'presence')
  assert.equal(Object.keys(p3.clients).length, 3)
  assert.deepEqual(Object.values(p3.clients).map(c => c.user).sort(), [alice, alice, bob].sort())
  assert.equal(p3.clients[bClient].user, bob)

  // The second user leaves: a leave event, and presence drops it.
  sb.sub.unsubscribe()
  const [leave] = await waitFor(sa.rec, 'leave', l => l.info.user === bob, 'the leave of the second client')
  assert.equal(leave.channel, channel)
  assert.equal(leave.info.client, bClient)
  await waitUntil('presenceStats back to two clients of one user', async () => {
    const s = await sa.sub.presenceStats()
    return s.numClients === 2 && s.numUsers === 1
  })
})

// Waits for an event of a recorder matching a predicate; returns the matching ones.
async function waitFor (rec, event, predicate, what) {
  return waitUntil(what, () => {
    const found = rec.all(event).filter(e => { try { return predicate(e) } catch { return false } })
    return found.length > 0 ? found : null
  })
}

test('history on the subscription: limit, since, reverse and the position alone', async t => {
  const channel = `tenant:123:${unique('history')}`
  const sent = range(1, 6).map(i => ({ type: 'deployment_progress', step: i }))
  let epoch = null
  for (const [i, data] of sent.entries()) {
    const r = await api('publish', { channel, data })
    assert.equal(r.offset, i + 1, 'a fresh channel numbers its publications from 1')
    epoch ??= r.epoch
    assert.equal(r.epoch, epoch)
  }
  const client = await connect(t, tenantToken(unique('js-user')))
  const { sub, subscribed } = await subscribe(client, channel, FULL)
  assert.deepEqual(subscribed.streamPosition, { offset: 6, epoch })

  const all = await withTimeout(sub.history({ limit: 100 }), 'history')
  assert.equal(all.epoch, epoch)
  assert.equal(all.offset, 6)
  assert.deepEqual(all.publications.map(p => p.offset), range(1, 6))
  assert.deepEqual(all.publications.map(p => p.data), sent)

  const first2 = await withTimeout(sub.history({ limit: 2 }), 'history limit 2')
  assert.deepEqual(first2.publications.map(p => p.offset), [1, 2])

  const since = await withTimeout(sub.history({ since: { offset: 3, epoch }, limit: 100 }), 'history since 3')
  assert.deepEqual(since.publications.map(p => p.offset), [4, 5, 6])
  assert.deepEqual(since.publications.map(p => p.data), sent.slice(3))

  const newest = await withTimeout(sub.history({ limit: 2, reverse: true }), 'history reverse')
  assert.deepEqual(newest.publications.map(p => p.offset), [6, 5])

  // Without a limit centrifuge-js sends none: only the stream position comes back.
  const position = await withTimeout(sub.history(), 'history without limit')
  assert.deepEqual(position, { publications: [], offset: 6, epoch })

  // History is for subscribers of the channel.
  const other = `tenant:123:${unique('history')}`
  const err = await errorOf(client.history(other, { limit: 10 }), 'history of a channel not subscribed')
  assert.equal(err.code, 103, JSON.stringify(err))
  const perr = await errorOf(client.presence(other), 'presence of a channel not subscribed')
  assert.equal(perr.code, 103, JSON.stringify(perr))
})

test('history keeps the last 10 publications of a tenant channel (history_size 10)', async t => {
  const channel = `tenant:123:${unique('trimmed')}`
  for (const i of range(1, 12)) await api('publish', { channel, data: { i } })
  const client = await connect(t, tenantToken(unique('js-user')))
  const { sub } = await subscribe(client, channel, FULL)
  const h = await withTimeout(sub.history({ limit: 100 }), 'history')
  assert.equal(h.offset, 12)
  assert.deepEqual(h.publications.map(p => p.offset), range(3, 12))
  assert.deepEqual(h.publications.map(p => p.data.i), range(3, 12))
})

test('rpc is refused with 104 (method not found)', async t => {
  const client = await connect(t, tenantToken(unique('js-user')))
  const err = await errorOf(client.rpc('getDeployments', { tenant: 123 }), 'rpc')
  assert.equal(err.code, 104, JSON.stringify(err))
  // The connection survives the error.
  assert.equal(client.state, 'connected')
  const again = await errorOf(client.rpc('anything', {}), 'a second rpc')
  assert.equal(again.code, 104)
})

test('tenant isolation: tenant 123 cannot use tenant:456:* or admin:*, an admin can', async t => {
  const client = await connect(t, tenantToken(unique('js-user')))
  for (const channel of ['tenant:456:deployments', 'admin:alerts']) {
    const ctx = await subscribeRefused(client, channel)
    assert.equal(ctx.code, 103, `${channel}: ${JSON.stringify(ctx)}`)
  }
  const perr = await errorOf(client.publish('tenant:456:deployments', { x: 1 }), 'publish to tenant:456')
  assert.equal(perr.code, 103, JSON.stringify(perr))
  const herr = await errorOf(client.history('tenant:456:deployments', { limit: 10 }), 'history of tenant:456')
  assert.equal(herr.code, 103, JSON.stringify(herr))
  // Refusals do not end the connection, and the own tenant still works.
  assert.equal(client.state, 'connected')
  await subscribe(client, 'tenant:123:deployments', FULL)

  // The same tenant given as a string is the same tenant.
  const asString = await connect(t, mint({ sub: unique('js-user'), tenant_id: '456' }))
  await subscribe(asString, 'tenant:456:deployments', FULL)

  const admin = await connect(t, mint({ sub: unique('admin'), tenant_id: 1, roles: ['admin'] }))
  const alerts = await subscribe(admin, 'admin:alerts', FULL)
  await subscribe(admin, 'tenant:456:deployments', FULL)
  const alert = { type: 'alert', severity: 'critical', message: 'disk full' }
  await api('publish', { channel: 'admin:alerts', data: alert })
  const [pub] = await alerts.rec.until('publication', 1, 'the alert')
  assert.deepEqual(pub.data, alert)
})

test('system:announcements: any tenant subscribes, only the server API publishes (client publish 103)', async t => {
  const channel = 'system:announcements'
  const client = await connect(t, tenantToken(unique('js-user')))
  const { sub, rec } = await subscribe(client, channel, FULL)
  const announcement = { type: 'maintenance', message: 'maintenance at 02:00 UTC' }
  const r = await api('publish', { channel, data: announcement })
  const [pub] = await rec.until('publication', 1, 'the announcement')
  assert.deepEqual(pub.data, announcement)
  assert.equal(pub.offset, r.offset)

  const err = await errorOf(sub.publish({ type: 'spam' }), 'client publish to system:announcements')
  assert.equal(err.code, 103, JSON.stringify(err))
  await sleep(SETTLE_MS)
  assert.equal(rec.all('publication').length, 1, 'the refused publication was not delivered')
})

test('unknown namespace and a channel without namespace: 102', async t => {
  const client = await connect(t, tenantToken(unique('js-user')))
  for (const channel of [`nonexistent:${unique('x')}`, unique('plain')]) {
    const ctx = await subscribeRefused(client, channel)
    assert.equal(ctx.code, 102, `${channel}: ${JSON.stringify(ctx)}`)
  }
  assert.equal(client.state, 'connected')
})

test('an expired token gets 109, then the token from getToken connects', async t => {
  const user = unique('js-user')
  // Beyond any leeway a JWT library applies by default (60 s in several).
  const expired = mint({ sub: user, tenant_id: 123, iat: nowSecs() - 7200, exp: nowSecs() - 600 })
  const order = []
  let calls = 0
  const client = newClient(t, expired, {
    getToken: async () => {
      calls++
      order.push('getToken')
      return tenantToken(user)
    }
  })
  client.on('error', ctx => order.push(`error:${ctx.type}:${ctx.error && ctx.error.code}`))
  client.on('connected', () => order.push('connected'))
  client.connect()
  try {
    await client.ready(WAIT_MS)
  } catch (e) {
    assert.fail(`never connected: ${JSON.stringify(e)}; ${JSON.stringify(order)}`)
  }
  assert.deepEqual(order, ['error:connect:109', 'getToken', 'connected'])
  assert.equal(calls, 1)
  await subscribe(client, 'tenant:123:deployments', FULL)
})

test('a bad signature or alg none: 101 and no reconnect; auth failures are counted', async t => {
  const before = await summary()
  const beforeTotal = sum(samples(await metricsText(), 'auth_failures_total'))
  const bad = [
    ['a token signed with another secret', mint({ sub: unique('js-user'), tenant_id: 123 }, 'not-the-server-secret-'.repeat(4))],
    ['an alg none token', unsignedToken({ sub: unique('js-user'), tenant_id: 123 })]
  ]
  for (const [what, token] of bad) {
    const client = newClient(t, token)
    client.connect()
    const [ctx] = await client.rec.until('disconnected', 1, `the refusal of ${what}`)
    // The connect reply's 101 or the close code 3500 that follows it, whichever the client
    // handles first: both are terminal.
    assert.ok([101, 3500].includes(ctx.code), `${what}: ${JSON.stringify(ctx)}`)
    await sleep(1000)
    assert.equal(client.state, 'disconnected', `${what}: the client reconnected`)
    assert.equal(client.rec.all('connecting').length, 1, `${what}: ${JSON.stringify(client.rec.log)}`)
    assert.equal(client.rec.all('connected').length, 0)
  }

  const after = await summary()
  assert.ok(after.auth_failures >= before.auth_failures + 2, `auth_failures ${before.auth_failures} -> ${after.auth_failures}`)
  const text = await metricsText()
  const failures = samples(text, 'auth_failures_total')
  assert.ok(failures.length > 0, 'no auth_failures_total sample in /metrics')
  assert.ok(sum(failures) >= beforeTotal + 2, `auth_failures_total ${beforeTotal} -> ${sum(failures)}`)
  for (const s of failures) {
    assert.ok(s.labels.interface && s.labels.reason, `auth_failures_total without interface/reason: ${JSON.stringify(s)}`)
  }
})

test('recovery after a disconnect: exactly the missed publications, in order', async t => {
  const channel = `tenant:123:${unique('recovery')}`
  const client = await connect(t, tenantToken(unique('js-user')))
  const { sub, rec, subscribed } = await subscribe(client, channel, FULL)
  const epoch = subscribed.streamPosition.epoch
  for (const i of [1, 2]) await api('publish', { channel, data: { i } })
  await rec.until('publication', 2, 'the first two publications')

  client.disconnect()
  assert.equal(client.state, 'disconnected')
  assert.equal(sub.state, 'subscribing', 'a subscription waits for the next connect')
  const missed = []
  for (const i of [3, 4, 5]) missed.push(await api('publish', { channel, data: { i } }))
  assert.deepEqual(missed.map(r => r.offset), [3, 4, 5])

  client.connect()
  const resubscribed = await rec.until('subscribed', 2, 'the resubscribe after reconnecting')
  const ctx = resubscribed[1]
  assert.equal(ctx.wasRecovering, true, JSON.stringify(ctx))
  assert.equal(ctx.recovered, true, JSON.stringify(ctx))
  assert.equal(ctx.streamPosition.epoch, epoch)
  await rec.until('publication', 5, 'the three missed publications')
  await sleep(SETTLE_MS)
  const pubs = rec.all('publication')
  assert.deepEqual(pubs.map(p => p.offset), [1, 2, 3, 4, 5], 'each publication exactly once, in order')
  assert.deepEqual(pubs.map(p => p.data.i), [1, 2, 3, 4, 5])
})

test("the seed's POST /api/events/publish and GET /api/events/history/{channel}", async t => {
  const channel = `tenant:123:${unique('deployments')}`
  const client = await connect(t, tenantToken(unique('js-user')))
  const { rec } = await subscribe(client, channel, FULL)
  const events = [
    { type: 'deployment_start', data: { deploymentId: 'deploy-456', product: 'odoo', version: '19', modules: ['sale', 'purchase'] } },
    { type: 'deployment_progress', data: { deploymentId: 'deploy-456', progress: 50, message: 'Configuring database...' } },
    { type: 'deployment_complete', data: { deploymentId: 'deploy-456', url: 'https://odoo-tenant123.neo-stack.com' } }
  ]
  let epoch = null
  for (const [i, event] of events.entries()) {
    const r = await http('/api/events/publish', { method: 'POST', body: { channel, event }, headers: { 'X-API-Key': API_KEY } })
    assert.equal(r.status, 200, r.text)
    assert.equal(r.json.success, true, r.text)
    assert.equal(r.json.channel, channel)
    assert.equal(r.json.offset, i + 1)
    assert.ok(typeof r.json.epoch === 'string' && r.json.epoch.length > 0, r.text)
    epoch ??= r.json.epoch
    assert.equal(r.json.epoch, epoch)
  }
  const pubs = await rec.until('publication', 3, 'the three seed events')
  assert.deepEqual(pubs.map(p => p.offset), [1, 2, 3])
  for (const [i, p] of pubs.entries()) {
    assert.equal(p.data.type, events[i].type, JSON.stringify(p.data))
    assert.deepEqual(p.data.data, events[i].data)
  }

  const h = await http(`/api/events/history/${channel}?limit=50`, { headers: { 'X-API-Key': API_KEY } })
  assert.equal(h.status, 200, h.text)
  assert.equal(h.json.channel, channel)
  assert.equal(h.json.epoch, epoch)
  assert.equal(h.json.offset, 3)
  assert.deepEqual(h.json.publications.map(p => p.offset), [1, 2, 3])
  for (const [i, p] of h.json.publications.entries()) {
    assert.equal(p.data.type, events[i].type)
    assert.deepEqual(p.data.data, events[i].data)
  }
  const two = await http(`/api/events/history/${channel}?limit=2`, { headers: { 'X-API-Key': API_KEY } })
  assert.equal(two.status, 200, two.text)
  assert.equal(two.json.publications.length, 2)

  // Without credentials: 401.
  const anon = await http('/api/events/publish', { method: 'POST', body: { channel, event: events[0] } })
  assert.equal(anon.status, 401, anon.text)
})

test('/api/metrics/summary and /metrics count connections, subscriptions and publications', async t => {
  const channel = `tenant:123:${unique('metrics')}`
  const client = await connect(t, tenantToken(unique('js-user')))
  const { rec } = await subscribe(client, channel, FULL)
  await api('publish', { channel, data: { m: 1 } })
  await rec.until('publication', 1, 'the publication')

  const s = await summary()
  for (const key of ['connections', 'subscriptions', 'channels', 'events_published', 'messages_sent',
    'auth_failures', 'slow_disconnects', 'uptime_seconds']) {
    assert.equal(typeof s[key], 'number', `summary.${key}: ${JSON.stringify(s)}`)
    assert.ok(s[key] >= 0, `summary.${key}: ${JSON.stringify(s)}`)
  }
  assert.ok(s.connections >= 1, JSON.stringify(s))
  assert.ok(s.subscriptions >= 1, JSON.stringify(s))
  assert.ok(s.channels >= 1, JSON.stringify(s))
  assert.ok(s.events_published >= 1, JSON.stringify(s))
  assert.ok(s.messages_sent >= 1, JSON.stringify(s))

  const text = await metricsText()
  const need = (name, atLeast) => {
    const found = samples(text, name)
    assert.ok(found.length > 0, `no ${name} sample in /metrics`)
    assert.ok(sum(found) >= atLeast, `${name} = ${sum(found)}, expected >= ${atLeast}`)
  }
  need('active_connections', 1)
  need('events_published_total', 1)
  need('realtime_subscriptions', 1)
  need('realtime_messages_sent_total', 1)
  assert.ok(/^event_publish_duration_seconds(_bucket|_count|_sum)?[{ ]/m.test(text), 'no event_publish_duration_seconds in /metrics')

  const health = await http('/health')
  assert.equal(health.status, 200, health.text)
})

// --- recovery across a restart ----------------------------------------------------------------

// A port free now: bound to port 0, then released for herald to bind.
function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

// A herald of this test's own, on a fixed port, so that it can be stopped and started again
// under the same URL.
class OwnHerald {
  constructor (dataDir, port, apiKey) {
    this.dataDir = dataDir
    this.port = port
    this.apiKey = apiKey
    this.proc = null
    this.output = ''
  }

  async start () {
    assert.ok(HERALD_BIN, 'HERALD_BIN must be set (compat/run sets it)')
    // The suite's own HERALD_* variables are not this server's configuration.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')))
    env.HERALD_JWT_SECRET = SECRET
    env.HERALD_ADMIN_API_KEY = this.apiKey
    const proc = spawn(HERALD_BIN, ['serve', '--data-dir', this.dataDir, '--http-addr', `127.0.0.1:${this.port}`,
      '--kafka-addr', 'PLAINTEXT://127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.proc = proc
    this.exited = new Promise(resolve => proc.once('exit', (code, signal) => resolve({ code, signal })))
    const keep = chunk => { this.output = (this.output + chunk).slice(-20000) }
    proc.stderr.on('data', keep)
    let stdout = ''
    this.http = await withTimeout(new Promise((resolve, reject) => {
      proc.stdout.on('data', chunk => {
        keep(chunk)
        stdout += chunk
        // Complete lines only: a chunk may end inside the URL.
        const lines = stdout.slice(0, stdout.lastIndexOf('\n') + 1)
        const m = lines.match(/^\s*HTTP API\s+(http:\/\/\S+)/m)
        if (m) resolve(m[1])
      })
      proc.once('exit', code => reject(new Error(`herald exited (${code}) before listening:\n${this.output}`)))
      proc.once('error', reject)
    }), "herald's HTTP API line", 30000)
    await waitUntil(`${this.http}/health`, async () => {
      try { return (await http('/health', { base: this.http })).status === 200 } catch { return false }
    })
    return this
  }

  // SIGTERM; resolves with the exit status.
  async stop () {
    this.proc.kill('SIGTERM')
    return withTimeout(this.exited, 'herald to exit after SIGTERM', 30000)
  }

  kill () {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL')
  }
}

test('recovery across a herald restart on the same port and data directory', { timeout: 120000 }, async t => {
  const port = await freePort()
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'herald-realtime-restart.'))
  const apiKey = `compat-restart-${randomBytes(8).toString('hex')}`
  let server = new OwnHerald(dataDir, port, apiKey)
  t.after(() => {
    server.kill()
    rmSync(dataDir, { recursive: true, force: true })
  })
  try {
    await server.start()
    const base = server.http
    assert.equal(base, `http://127.0.0.1:${port}`)

    // getData is called before every connection attempt: while the gate is closed the client
    // waits there, so the publications made after the restart are missed ones, which the
    // resubscribe must recover (instead of receiving them live).
    let gate = Promise.resolve()
    let openGate = null
    const client = newClient(t, tenantToken(unique('js-user')), { getData: () => gate.then(() => null) }, base)
    client.connect()
    await client.ready(WAIT_MS)
    const channel = 'tenant:123:deployments'
    const { rec, subscribed } = await subscribe(client, channel, FULL)
    const epoch = subscribed.streamPosition.epoch
    assert.ok(epoch, JSON.stringify(subscribed))
    assert.equal(subscribed.streamPosition.offset, 0, 'a fresh data directory has an empty stream')

    for (const i of [1, 2, 3]) {
      const r = await api('publish', { channel, data: { i } }, { base, key: apiKey })
      assert.deepEqual([r.offset, r.epoch], [i, epoch])
    }
    await rec.until('publication', 3, 'the publications before the restart')

    gate = new Promise(resolve => { openGate = resolve })
    const connectingBefore = client.rec.all('connecting').length
    const status = await server.stop()
    assert.deepEqual(status, { code: 0, signal: null }, `herald's exit after SIGTERM:\n${server.output}`)
    await client.rec.until('connecting', connectingBefore + 1, 'the client to notice the shutdown')
    assert.notEqual(client.state, 'disconnected', 'the client must reconnect by itself after a shutdown')

    server = new OwnHerald(dataDir, port, apiKey)
    await server.start()
    assert.equal(server.http, base)
    for (const i of [4, 5]) {
      const r = await api('publish', { channel, data: { i } }, { base, key: apiKey })
      assert.deepEqual([r.offset, r.epoch], [i, epoch], 'offsets continue and the epoch is stable across the restart')
    }
    assert.equal(client.rec.all('connected').length, 1, 'the gate held the reconnect')
    openGate()

    const [, resub] = await rec.until('subscribed', 2, 'the resubscribe after the restart')
    assert.equal(resub.wasRecovering, true, JSON.stringify(resub))
    assert.equal(resub.recovered, true, JSON.stringify(resub))
    assert.equal(resub.streamPosition.epoch, epoch, 'the epoch survives the restart')
    await rec.until('publication', 5, 'the publications missed during the restart')
    await sleep(SETTLE_MS)
    const pubs = rec.all('publication')
    assert.deepEqual(pubs.map(p => p.offset), [1, 2, 3, 4, 5], 'each publication exactly once, in order')
    assert.deepEqual(pubs.map(p => p.data.i), [1, 2, 3, 4, 5])

    // The history survived too.
    const h = await http(`/api/events/history/${channel}?limit=50`, { base, headers: { 'X-API-Key': apiKey } })
    assert.equal(h.status, 200, h.text)
    assert.equal(h.json.epoch, epoch)
    assert.deepEqual(h.json.publications.map(p => p.offset), [1, 2, 3, 4, 5])
    client.disconnect()
  } catch (e) {
    console.log(`--- this test's herald (last output) ---\n${server.output.slice(-4000)}`)
    throw e
  }
})
