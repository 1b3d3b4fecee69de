// The WebSocket row of the tenant isolation matrix (compat/security/test_isolation.py runs it):
// centrifuge-js connects over wss:// with tenant A's token and tries subscribe, publish and
// history on A's channel and on B's. Prints one JSON object: {op: {own, other}} where each
// entry is "ok" or the Centrifugo error code.
//
// Env: WS_URL, TOKEN_A, OWN_CHANNEL, OTHER_CHANNEL (NODE_EXTRA_CA_CERTS trusts the dev CA).

import { Centrifuge } from 'centrifuge'
import WebSocket from 'ws'

const WAIT_MS = 10000
const env = name => {
  const v = process.env[name]
  if (!v) throw new Error(`${name} must be set`)
  return v
}

const timeout = (p, what) =>
  Promise.race([
    p,
    new Promise((_resolve, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), WAIT_MS))
  ])

const outcome = async (p, what) => {
  try {
    await timeout(p, what)
    return 'ok'
  } catch (e) {
    if (e && typeof e.code === 'number') return e.code
    if (e && e.error && typeof e.error.code === 'number') return e.error.code
    throw e
  }
}

// Subscribing resolves on `subscribed` or rejects with the server's error code.
function subscribe (client, channel) {
  const sub = client.newSubscription(channel)
  const done = new Promise((resolve, reject) => {
    sub.on('subscribed', () => resolve(sub))
    sub.on('error', ctx => reject(ctx.error))
    sub.on('unsubscribed', ctx => reject({ code: ctx.code }))
  })
  sub.subscribe()
  return { sub, done }
}

const client = new Centrifuge(env('WS_URL'), { websocket: WebSocket, token: env('TOKEN_A') })
const connected = new Promise(resolve => client.on('connected', resolve))
client.connect()
await timeout(connected, 'connect')

const result = {}
for (const [key, channel] of [['own', env('OWN_CHANNEL')], ['other', env('OTHER_CHANNEL')]]) {
  const { sub, done } = subscribe(client, channel)
  const sres = await outcome(done, `subscribe ${channel}`)
  ;(result.subscribe ??= {})[key] = sres
  if (sres !== 'ok') client.removeSubscription(sub)
  ;(result.publish ??= {})[key] = await outcome(client.publish(channel, { from: 'A' }), `publish ${channel}`)
  ;(result.history ??= {})[key] = await outcome(client.history(channel, { limit: 10 }), `history ${channel}`)
}
client.disconnect()
process.stdout.write(JSON.stringify(result) + '\n')
process.exit(0)
