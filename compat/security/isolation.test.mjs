// The WebSocket row of the tenant isolation matrix: centrifuge-js 5.x (over the `ws` package)
// with tenant A's connection token does every channel operation on A's channel (allowed) and on
// B's (denied with 103, permission denied), and every denial is counted and audited. Run by
// compat/run as part of the security suite with `node --test`; the Kafka and HTTP rows are
// compat/security/test_isolation.py.
//
// Starts a herald of its own (HERALD_BIN) with a fresh data directory. KAFKA_SECURITY_PROTOCOL
// picks the listeners the way test_isolation.py does: with SASL_SSL the HTTP API and the
// gateway are served over TLS too (https://, wss://), trusted through the development CA the
// server generates in its data directory. Connection tokens are HS256 JWTs with the server's
// HERALD_JWT_SECRET and the claims `sub` and `tenant_id`.
//
// centrifuge-js, ws and jsonwebtoken come from compat/realtime/node_modules (compat/run
// installs them there).

import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { after, before, test } from 'node:test'

const require = createRequire(new URL('../realtime/package.json', import.meta.url))
const { Centrifuge } = require('centrifuge')
const jwt = require('jsonwebtoken')
const WebSocket = require('ws')

const HERALD_BIN = process.env.HERALD_BIN
assert.ok(HERALD_BIN, 'HERALD_BIN must be set (compat/run sets it)')

// The listeners. Switching protocols is this one line; everything below follows LISTENERS.
const KAFKA_SECURITY_PROTOCOL = process.env.HERALD_SECURITY_KAFKA_PROTOCOL || 'SASL_SSL'
const LISTENERS = {
  SASL_PLAINTEXT: { serve: ['--kafka-addr', 'SASL_PLAINTEXT://127.0.0.1:0'], tls: false },
  SASL_SSL: { serve: ['--kafka-addr', 'SASL_SSL://127.0.0.1:0', '--http-tls'], tls: true }
}
const LISTENER = LISTENERS[KAFKA_SECURITY_PROTOCOL]
assert.ok(LISTENER, `unknown KAFKA_SECURITY_PROTOCOL ${KAFKA_SECURITY_PROTOCOL}`)

const WAIT_MS = 10000
// How long to keep listening for publications that must not arrive.
const SETTLE_MS = 500
const ADMIN_KEY = `compat-ws-isolation-admin-${randomBytes(8).toString('hex')}`
const SECRET = `compat-ws-isolation-jwt-${randomBytes(16).toString('hex')}`
const RUN = randomBytes(4).toString('hex')
const A = `matrixa-${RUN}`
const B = `matrixb-${RUN}`
const USER = { [A]: `user-a-${RUN}`, [B]: `user-b-${RUN}` }
const CHANNEL = { [A]: `tenant:${A}:orders`, [B]: `tenant:${B}:orders` }
const PERMISSION_DENIED = 103

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

function withTimeout (promise, what, ms = WAIT_MS) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// --- the server -------------------------------------------------------------------------------

const server = { proc: null, dataDir: null, http: null, ws: null, ca: null, output: '' }

// The one place the server is started (see LISTENERS).
async function startHerald () {
  server.dataDir = mkdtempSync(path.join(os.tmpdir(), 'herald-ws-isolation.'))
  // The suite's own HERALD_* variables are not this server's configuration.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')))
  Object.assign(env, { HERALD_ADMIN_API_KEY: ADMIN_KEY, HERALD_JWT_SECRET: SECRET, HERALD_LOG: 'warn' })
  const proc = spawn(HERALD_BIN, ['serve', '--data-dir', server.dataDir, '--http-addr', '127.0.0.1:0',
    ...LISTENER.serve], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  server.proc = proc
  const keep = chunk => { server.output = (server.output + chunk).slice(-20000) }
  proc.stderr.on('data', keep)
  let stdout = ''
  // The HTTP API line comes last in the banner.
  server.http = await withTimeout(new Promise((resolve, reject) => {
    proc.stdout.on('data', chunk => {
      keep(chunk)
      stdout += chunk
      const lines = stdout.slice(0, stdout.lastIndexOf('\n') + 1)
      const m = lines.match(/^\s*HTTP API\s+(https?:\/\/\S+)/m)
      if (m) resolve(m[1])
    })
    proc.once('exit', code => reject(new Error(`herald exited (${code}) before listening:\n${server.output}`)))
    proc.once('error', reject)
  }), "herald's HTTP API line", 30000)
  const ws = stdout.match(/^\s*WebSocket\s+(wss?:\/\/\S+)/m)
  assert.ok(ws, `no WebSocket line in the banner:\n${stdout}`)
  server.ws = ws[1]
  assert.equal(server.http.startsWith('https://'), LISTENER.tls, server.http)
  assert.equal(server.ws.startsWith('wss://'), LISTENER.tls, server.ws)
  if (LISTENER.tls) server.ca = readFileSync(path.join(server.dataDir, 'tls', 'ca.pem'))
}

function stopHerald () {
  if (server.proc && server.proc.exitCode === null && server.proc.signalCode === null) {
    server.proc.kill('SIGKILL')
  }
  if (server.dataDir) rmSync(server.dataDir, { recursive: true, force: true })
}

// HTTP(S) trusting the server's CA: {status, json, text}.
function request (pathname, { method = 'GET', body, key } = {}) {
  const url = new URL(server.http + pathname)
  const mod = url.protocol === 'https:' ? https : http
  const data = body === undefined ? undefined : JSON.stringify(body)
  return withTimeout(new Promise((resolve, reject) => {
    const req = mod.request(url, {
      method,
      ca: server.ca || undefined,
      headers: {
        ...(data === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...(key ? { 'X-API-Key': key } : {})
      }
    }, res => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', c => { text += c })
      res.on('end', () => {
        let json = null
        try { json = JSON.parse(text) } catch { /* left to the caller */ }
        resolve({ status: res.statusCode, text, json })
      })
    })
    req.on('error', reject)
    req.end(data)
  }), `${method} ${pathname}`)
}

// Centrifugo server API call (admin key) that must succeed; returns its `result`.
async function api (method, body) {
  const r = await request(`/api/${method}`, { method: 'POST', body, key: ADMIN_KEY })
  assert.equal(r.status, 200, `/api/${method}: HTTP ${r.status} ${r.text}`)
  assert.ok(r.json && !r.json.error && r.json.result, `/api/${method}: ${r.text}`)
  return r.json.result
}

// `ws` trusting the server's CA, as centrifuge-js constructs it: new WebSocket(url[, protocol]).
class TrustingWebSocket extends WebSocket {
  constructor (url, protocols) {
    super(url, protocols, server.ca ? { ca: server.ca } : {})
  }
}

// --- tokens and clients -----------------------------------------------------------------------

function token (claims) {
  const now = Math.floor(Date.now() / 1000)
  return jwt.sign({ iat: now, exp: now + 600, ...claims }, SECRET, { algorithm: 'HS256' })
}

const tenantToken = tenant => token({ sub: USER[tenant], tenant_id: tenant })

// Records the events of an emitter (handlers only record: an exception escaping a
// centrifuge-js handler stops the client).
class Recorder {
  constructor (emitter, events) {
    this.log = []
    for (const event of events) emitter.on(event, ctx => this.log.push({ event, ctx }))
  }

  all (event) { return this.log.filter(e => e.event === event).map(e => e.ctx) }

  async until (event, count, what) {
    const deadline = Date.now() + WAIT_MS
    while (this.all(event).length < count) {
      if (Date.now() > deadline) {
        assert.fail(`timed out waiting for ${what}; events: ${JSON.stringify(this.log)}`)
      }
      await sleep(20)
    }
    return this.all(event)
  }
}

const SUB_EVENTS = ['subscribing', 'subscribed', 'unsubscribed', 'publication', 'error']

async function connect (t, jwtToken) {
  const client = new Centrifuge(server.ws, { token: jwtToken, websocket: TrustingWebSocket })
  client.rec = new Recorder(client, ['connected', 'disconnected', 'error', 'publication'])
  t.after(() => client.disconnect())
  client.connect()
  try {
    await client.ready(WAIT_MS)
  } catch (e) {
    assert.fail(`connect failed: ${JSON.stringify(e)}; events: ${JSON.stringify(client.rec.log)}`)
  }
  return client
}

async function subscribed (client, channel, options = {}) {
  const sub = client.newSubscription(channel, options)
  const rec = new Recorder(sub, SUB_EVENTS)
  sub.subscribe()
  try {
    await sub.ready(WAIT_MS)
  } catch (e) {
    assert.fail(`subscribe to ${channel} failed: ${JSON.stringify(e)}; events: ${JSON.stringify(rec.log)}`)
  }
  return { sub, rec }
}

// A subscribe the server refuses ends in `unsubscribed` with the server's code; returns it.
async function refusedSubscribe (client, channel, options = {}) {
  const sub = client.newSubscription(channel, options)
  const rec = new Recorder(sub, SUB_EVENTS)
  sub.subscribe()
  const [ctx] = await rec.until('unsubscribed', 1, `the refusal of the subscribe to ${channel}`)
  assert.equal(rec.all('subscribed').length, 0, `${channel} was subscribed`)
  return { sub, rec, code: ctx.code }
}

// The code a call that must fail was rejected with.
async function errorCode (promise, what) {
  let value
  try {
    value = await withTimeout(promise, what)
  } catch (e) {
    assert.equal(typeof e.code, 'number', `${what}: ${JSON.stringify(e)}`)
    return e.code
  }
  assert.fail(`${what} succeeded (${JSON.stringify(value)}); it must be refused`)
}

async function adminHistory (channel) {
  return (await api('history', { channel, limit: 100 })).publications.map(p => p.data)
}

// --- the matrix -------------------------------------------------------------------------------

before(async () => {
  await startHerald()
  // Each tenant's channel has a publication of its own.
  for (const t of [A, B]) await api('publish', { channel: CHANNEL[t], data: { from: t, seeded: true } })
})

after(stopHerald)

test('subscribe: own channel delivers its publications; the other tenant\'s is refused with 103 and delivers nothing', async t => {
  const client = await connect(t, tenantToken(A))
  const own = await subscribed(client, CHANNEL[A])
  const other = await refusedSubscribe(client, CHANNEL[B])
  assert.equal(other.code, PERMISSION_DENIED)
  await api('publish', { channel: CHANNEL[A], data: { n: 1 } })
  await api('publish', { channel: CHANNEL[B], data: { n: 2, secret: true } })
  await own.rec.until('publication', 1, 'the publication on A\'s channel')
  await sleep(SETTLE_MS)
  assert.deepEqual(own.rec.all('publication').map(p => p.data), [{ n: 1 }])
  assert.equal(other.rec.all('publication').length, 0)
  assert.ok(!JSON.stringify(client.rec.log).includes('"secret"'), 'a publication of B\'s reached A')
  assert.equal(client.state, 'connected', 'a refusal must not end the connection')
})

test('publish: own channel → ok, the other tenant\'s → 103 and nothing lands there', async t => {
  const client = await connect(t, tenantToken(A))
  await subscribed(client, CHANNEL[A])
  await withTimeout(client.publish(CHANNEL[A], { from: A, via: 'ws' }), 'publish to A\'s channel')
  assert.ok((await adminHistory(CHANNEL[A])).some(d => d.via === 'ws'))
  const before = await adminHistory(CHANNEL[B])
  assert.equal(await errorCode(client.publish(CHANNEL[B], { from: A, via: 'ws' }), 'publish to B\'s channel'),
    PERMISSION_DENIED)
  assert.deepEqual(await adminHistory(CHANNEL[B]), before)
})

test('history: own channel → its publications, the other tenant\'s → 103', async t => {
  const client = await connect(t, tenantToken(A))
  await subscribed(client, CHANNEL[A])
  const own = await withTimeout(client.history(CHANNEL[A], { limit: 10 }), 'history of A\'s channel')
  assert.ok(own.publications.some(p => p.data.from === A && p.data.seeded), JSON.stringify(own))
  assert.equal(await errorCode(client.history(CHANNEL[B], { limit: 10 }), 'history of B\'s channel'),
    PERMISSION_DENIED)
})

test('presence and presence stats: own channel → ok, the other tenant\'s → 103', async t => {
  const client = await connect(t, tenantToken(A))
  await subscribed(client, CHANNEL[A])
  const presence = await withTimeout(client.presence(CHANNEL[A]), 'presence of A\'s channel')
  assert.ok(Object.values(presence.clients).some(c => c.user === USER[A]), JSON.stringify(presence))
  const stats = await withTimeout(client.presenceStats(CHANNEL[A]), 'presence stats of A\'s channel')
  assert.ok(stats.numClients >= 1, JSON.stringify(stats))
  assert.equal(await errorCode(client.presence(CHANNEL[B]), 'presence of B\'s channel'), PERMISSION_DENIED)
  assert.equal(await errorCode(client.presenceStats(CHANNEL[B]), 'presence stats of B\'s channel'),
    PERMISSION_DENIED)
})

test('a subscription token for the other tenant\'s channel does not open it (103)', async t => {
  const client = await connect(t, tenantToken(A))
  // Validly signed, naming A's user and B's channel: the tenant fence still refuses.
  const subToken = token({ sub: USER[A], channel: CHANNEL[B] })
  const { code } = await refusedSubscribe(client, CHANNEL[B], { token: subToken })
  assert.equal(code, PERMISSION_DENIED)
  // The same kind of token for A's own channel works.
  await subscribed(client, CHANNEL[A], { token: token({ sub: USER[A], channel: CHANNEL[A] }) })
})

test('the other tenant\'s own token works on its channel (the control column)', async t => {
  const client = await connect(t, tenantToken(B))
  const { rec } = await subscribed(client, CHANNEL[B])
  const history = await withTimeout(client.history(CHANNEL[B], { limit: 10 }), 'B\'s history')
  assert.ok(history.publications.some(p => p.data.from === B), JSON.stringify(history))
  await withTimeout(client.publish(CHANNEL[B], { from: B, via: 'ws' }), 'B publishes')
  await rec.until('publication', 1, 'B\'s own publication')
  // ... and is refused on A's.
  assert.equal((await refusedSubscribe(client, CHANNEL[A])).code, PERMISSION_DENIED)
})

test('a token without a tenant claim gets no tenant\'s channel (103)', async t => {
  const client = await connect(t, token({ sub: `user-none-${RUN}` }))
  for (const tenant of [A, B]) {
    assert.equal((await refusedSubscribe(client, CHANNEL[tenant])).code, PERMISSION_DENIED)
  }
})

test('every WebSocket denial is counted and audited with A\'s principal and B\'s channel', async t => {
  const metrics = await request('/metrics')
  assert.equal(metrics.status, 200)
  const m = metrics.text.match(/^auth_failures_total\{interface="websocket",reason="tenant_isolation"\} (\d+)$/m)
  // A: subscribe ×2 (plain, with a subscription token), publish, history, presence, presence
  // stats; B: subscribe to A's.
  assert.ok(m && Number(m[1]) >= 7, m ? m[0] : metrics.text)

  const principal = `User:${USER[A]}`
  const want = ['SUBSCRIBE', 'PUBLISH', 'HISTORY', 'PRESENCE']
  let mine = []
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    const r = await request('/v1/topics/_herald.audit.security/events?offset=0&limit=1000', { key: ADMIN_KEY })
    assert.equal(r.status, 200, r.text)
    mine = r.json.events.map(e => e.value)
      .filter(v => v.interface === 'websocket' && v.principal === principal)
    if (want.every(op => mine.some(v => v.operation === op)) || Date.now() > deadline) break
    await sleep(200)
  }
  for (const op of want) {
    assert.ok(mine.some(v => v.operation === op), `${op} not audited: ${JSON.stringify(mine)}`)
  }
  for (const v of mine) {
    assert.equal(v.resource, `Channel:${CHANNEL[B]}`, JSON.stringify(v))
    assert.equal(v.reason, 'tenant_isolation', JSON.stringify(v))
    assert.equal(v.source, '127.0.0.1', JSON.stringify(v))
    assert.ok(Number.isInteger(v.time_ms) && v.time_ms > 1.7e12, JSON.stringify(v))
  }
})
