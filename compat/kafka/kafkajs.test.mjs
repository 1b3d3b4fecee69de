// kafkajs against Herald's Kafka listener (run by compat/run with `node --test`).
//
// Needs HERALD_KAFKA (host:port), HERALD_HTTP (URL) and HERALD_API_KEY. kafkajs has no consumer
// without a group, and Herald has no group coordinator yet, so what kafkajs produces is read back
// through Herald's HTTP read API and kafkajs' admin offsets.

import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, test } from 'node:test'

import kafkajs from 'kafkajs'
import SnappyCodec from 'kafkajs-snappy'
import LZ4Codec from 'kafkajs-lz4'
import ZstdCodec from '@kafkajs/zstd'

const { Kafka, CompressionTypes, CompressionCodecs, ConfigResourceTypes, logLevel } = kafkajs

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec
CompressionCodecs[CompressionTypes.ZSTD] = ZstdCodec()

const BROKER = required('HERALD_KAFKA')
const HTTP = required('HERALD_HTTP').replace(/\/$/, '')
const API_KEY = required('HERALD_API_KEY')
const TENANT = '76953480-3'

function required (name) {
  const v = process.env[name]
  if (!v) throw new Error(`${name} must be set (compat/run sets it)`)
  return v
}

const unique = prefix => `${prefix}_${randomBytes(5).toString('hex')}`
const tenantTopic = eventType => `smarteros.${TENANT}.compat.${eventType}`

async function http (path, init = {}) {
  const res = await fetch(`${HTTP}${path}`, {
    ...init,
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json', ...(init.headers || {}) }
  })
  const text = await res.text()
  return { status: res.status, text, json: text ? JSON.parse(text) : null }
}

// Reads events from offset 0 until `count` are there (acks=0 gives no confirmation).
async function readEvents (topic, count, { partition = 0, timeoutMs = 15000 } = {}) {
  const deadline = Date.now() + timeoutMs
  let events = []
  while (Date.now() < deadline) {
    const r = await http(`/v1/topics/${topic}/events?partition=${partition}&offset=0&limit=1000&wait_ms=500`)
    if (r.status === 200) {
      events = r.json.events
      if (events.length >= count) return { events, raw: r.text }
    } else if (r.status !== 404) {
      assert.fail(`HTTP read of ${topic}: ${r.status} ${r.text}`)
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return { events, raw: '' }
}

async function topicStats (topic) {
  const r = await http(`/v1/topics/${topic}`)
  assert.equal(r.status, 200, r.text)
  return r.json
}

function errorTypes (e) {
  // kafkajs wraps protocol errors (KafkaJSNonRetriableError, KafkaJSAggregateError, ...).
  const out = []
  const seen = new Set()
  const walk = err => {
    if (!err || typeof err !== 'object' || seen.has(err)) return
    seen.add(err)
    if (err.type) out.push(err.type)
    walk(err.originalError)
    walk(err.cause)
    for (const inner of err.errors || []) walk(inner)
  }
  walk(e)
  return out
}

const kafka = new Kafka({
  clientId: 'herald-compat-kafkajs',
  brokers: [BROKER],
  logLevel: logLevel.NOTHING,
  retry: { retries: 3, initialRetryTime: 100 }
})

const CODECS = [
  ['none', CompressionTypes.None],
  ['gzip', CompressionTypes.GZIP],
  ['snappy', CompressionTypes.Snappy],
  ['lz4', CompressionTypes.LZ4],
  ['zstd', CompressionTypes.ZSTD]
]
const ACKS = [-1, 1, 0]

const bigText = 'smarteros order created '.repeat(40)

describe('kafkajs producer', () => {
  let producer
  before(async () => {
    producer = kafka.producer({ allowAutoTopicCreation: true, idempotent: false })
    await producer.connect()
  })
  after(async () => { await producer?.disconnect() })

  for (const [codecName, codec] of CODECS) {
    for (const acks of ACKS) {
      test(`codec ${codecName}, acks ${acks}`, async () => {
        const topic = tenantTopic(unique(`kjs_${codecName}_${acks === -1 ? 'all' : acks}`))
        const n = 20
        const messages = Array.from({ length: n }, (_, i) => ({
          partition: 0,
          key: `key-${i}`,
          value: JSON.stringify({ n: i, codec: codecName, text: bigText }),
          headers: { i: String(i), codec: codecName }
        }))
        const result = await producer.send({ topic, acks, compression: codec, messages })
        if (acks !== 0) {
          assert.deepEqual(
            result.map(r => [r.topicName, r.partition, r.errorCode, r.baseOffset]),
            [[topic, 0, 0, '0']]
          )
        }
        const { events, raw } = await readEvents(topic, n)
        assert.equal(events.length, n, `read ${events.length} of ${n} events`)
        assert.deepEqual(events.map(e => e.offset), [...Array(n).keys()])
        for (const [i, e] of events.entries()) {
          assert.equal(e.format, 'json')
          assert.ok(raw.includes(messages[i].value), `value ${i} not stored byte for byte`)
          assert.deepEqual(e.value, JSON.parse(messages[i].value))
          assert.equal(e.key, `key-${i}`)
          assert.deepEqual(e.headers, { i: String(i), codec: codecName })
          assert.ok(Math.abs(e.timestamp - Date.now()) < 60000, `timestamp ${e.timestamp}`)
        }
        if (codecName !== 'none') {
          // compression.type=producer: the batch is stored as sent, compressed.
          const { partitions } = await topicStats(topic)
          const rawBytes = messages.reduce((s, m) => s + m.value.length, 0)
          assert.ok(partitions[0].size_bytes < rawBytes / 4,
            `${codecName}: ${partitions[0].size_bytes} bytes stored for ${rawBytes} bytes of values`)
        }
      })
    }
  }

  test('sendBatch to several topics and partitions', async () => {
    const admin = kafka.admin()
    await admin.connect()
    try {
      const a = tenantTopic(unique('kjs_batch_a'))
      const b = tenantTopic(unique('kjs_batch_b'))
      assert.equal(await admin.createTopics({ topics: [{ topic: a, numPartitions: 2 }] }), true)
      const result = await producer.sendBatch({
        acks: -1,
        compression: CompressionTypes.GZIP,
        topicMessages: [
          { topic: a, messages: [{ partition: 0, value: 'a0' }, { partition: 1, value: 'a1' }, { partition: 1, value: 'a1b' }] },
          { topic: b, messages: [{ partition: 0, value: 'b0' }] }
        ]
      })
      const got = result.map(r => [r.topicName, r.partition, r.errorCode, r.baseOffset]).sort()
      assert.deepEqual(got, [[a, 0, 0, '0'], [a, 1, 0, '0'], [b, 0, 0, '0']].sort())
      assert.deepEqual((await readEvents(a, 2, { partition: 1 })).events.map(e => e.value), ['a1', 'a1b'])
      assert.deepEqual(
        (await admin.fetchTopicOffsets(a)).map(p => [p.partition, p.low, p.high]).sort(),
        [[0, '0', '1'], [1, '0', '2']]
      )
    } finally {
      await admin.disconnect()
    }
  })

  test('an envelope for another tenant is refused with INVALID_RECORD', async () => {
    const topic = `smarteros.${TENANT}.shopify.order_created`
    await producer.send({ topic, acks: -1, messages: [{ partition: 0, value: 'raw, not an envelope' }] })
    const beforeHw = (await topicStats(topic)).partitions[0].high_watermark
    await assert.rejects(
      producer.send({
        topic,
        acks: -1,
        messages: [{ partition: 0, value: JSON.stringify({ tenant_id: 'other', service: 'shopify', event_type: 'order_created' }) }]
      }),
      e => {
        assert.ok(errorTypes(e).includes('INVALID_RECORD'), `error types ${errorTypes(e)}: ${e}`)
        return true
      }
    )
    assert.equal((await topicStats(topic)).partitions[0].high_watermark, beforeHw)
  })
})

describe('kafkajs admin', () => {
  let admin
  before(async () => {
    admin = kafka.admin()
    await admin.connect()
  })
  after(async () => { await admin?.disconnect() })

  test('createTopics, fetchTopicMetadata, describeConfigs, alterConfigs, offsets, deleteTopics', async () => {
    const topic = tenantTopic(unique('kjs_admin'))
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }), true)
    // A second create of the same topic: kafkajs answers false (TOPIC_ALREADY_EXISTS).
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] }), false)
    assert.ok((await admin.listTopics()).includes(topic))

    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    assert.equal(topics.length, 1)
    assert.equal(topics[0].name, topic)
    assert.deepEqual(
      topics[0].partitions.map(p => [p.partitionId, p.leader, p.replicas, p.isr]).sort(),
      [[0, 0, [0], [0]], [1, 0, [0], [0]], [2, 0, [0], [0]]]
    )

    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }]
    })
    const [resource] = described.resources
    assert.equal(resource.errorCode, 0)
    const entries = Object.fromEntries(resource.configEntries.map(e => [e.configName, e]))
    const httpConfig = (await topicStats(topic)).config
    assert.deepEqual(Object.keys(entries).sort(), Object.keys(httpConfig).sort())
    assert.equal(entries['retention.ms'].configValue, '604800000')
    assert.equal(entries['retention.ms'].readOnly, false)
    assert.equal(entries['retention.ms'].configSource, 5) // DEFAULT_CONFIG
    assert.equal(entries['retention.ms'].isDefault, true)

    await admin.alterConfigs({
      validateOnly: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '7776000000' }] }]
    })
    const altered = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configNames: ['retention.ms'] }]
    })
    const alteredEntries = altered.resources[0].configEntries
    assert.deepEqual(alteredEntries.map(e => [e.configName, e.configValue, e.configSource]), [['retention.ms', '7776000000', 1]])
    assert.equal((await topicStats(topic)).config['retention.ms'], '7776000000')

    // Offsets: earliest/latest and by timestamp.
    const producer = kafka.producer()
    await producer.connect()
    const base = Date.now() - 3600000
    try {
      await producer.send({
        topic,
        acks: -1,
        messages: [0, 1, 2, 3].map(i => ({ partition: 2, value: `v${i}`, timestamp: String(base + i * 1000) }))
      })
    } finally {
      await producer.disconnect()
    }
    const offsets = (await admin.fetchTopicOffsets(topic)).map(p => [p.partition, p.low, p.high, p.offset]).sort()
    assert.deepEqual(offsets, [[0, '0', '0', '0'], [1, '0', '0', '0'], [2, '0', '4', '4']])
    const byTime = (await admin.fetchTopicOffsetsByTimestamp(topic, base + 1500)).map(p => [p.partition, p.offset]).sort()
    // Partitions without a record that late answer the high watermark.
    assert.deepEqual(byTime, [[0, '0'], [1, '0'], [2, '2']])

    await admin.deleteTopics({ topics: [topic] })
    assert.ok(!(await admin.listTopics()).includes(topic))
    assert.equal((await http(`/v1/topics/${topic}`)).status, 404)
  })

  test('createTopics with replicationFactor 3 fails cleanly', async () => {
    const topic = tenantTopic(unique('kjs_rf3'))
    await assert.rejects(
      admin.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 3 }] }),
      e => {
        assert.ok(errorTypes(e).includes('INVALID_REPLICATION_FACTOR'), `error types ${errorTypes(e)}: ${e}`)
        return true
      }
    )
    assert.equal((await http(`/v1/topics/${topic}`)).status, 404)
  })

  test('describeCluster', async () => {
    const cluster = await admin.describeCluster()
    const [host, port] = [BROKER.slice(0, BROKER.lastIndexOf(':')), Number(BROKER.slice(BROKER.lastIndexOf(':') + 1))]
    assert.deepEqual(cluster.brokers, [{ nodeId: 0, host, port }])
    assert.equal(cluster.controller, 0)
    assert.equal(cluster.clusterId, 'herald')
  })

  test('deleteTopics of an unknown topic fails', async () => {
    await assert.rejects(
      admin.deleteTopics({ topics: [tenantTopic(unique('kjs_never'))], timeout: 2000 }),
      e => {
        assert.ok(errorTypes(e).includes('UNKNOWN_TOPIC_OR_PARTITION'), `error types ${errorTypes(e)}: ${e}`)
        return true
      }
    )
  })
})
