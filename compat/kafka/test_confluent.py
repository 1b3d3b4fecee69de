"""librdkafka (confluent-kafka) against Herald's Kafka listener.

Needs HERALD_KAFKA, HERALD_HTTP and HERALD_API_KEY, as compat/run exports them. Herald has no
group coordinator yet: consumers set a group.id (librdkafka requires one) but use assign() with
explicit offsets and never commit.
"""

import os
import time
import uuid

import confluent_kafka
import pytest
import requests
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

BOOTSTRAP = os.environ["HERALD_KAFKA"]
HTTP = os.environ["HERALD_HTTP"].rstrip("/")
API_KEY = os.environ["HERALD_API_KEY"]
TENANT = "76953480-3"

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
ACKS = ["0", "1", "all"]


def test_client_version():
    print(f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}")
    assert confluent_kafka.libversion()[1] >= 0x02000000


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def tenant_topic(event_type):
    return f"smarteros.{TENANT}.compat.{event_type}"


def topic_stats(topic):
    r = requests.get(f"{HTTP}/v1/topics/{topic}", headers={"X-API-Key": API_KEY}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def produce_all(producer, topic, messages, partition=None):
    """Produces (key, value, headers) triples; returns the delivery reports in order."""
    reports = []

    def on_delivery(err, msg):
        reports.append((err, msg))

    for key, value, headers in messages:
        kwargs = dict(key=key, value=value, headers=headers, on_delivery=on_delivery)
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages still undelivered after 30 s"
    assert len(reports) == len(messages)
    errors = [(err, m.offset()) for err, m in reports if err is not None]
    assert not errors, errors[:5]
    return [m for _, m in reports]


def new_consumer(**extra):
    config = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": "herald-compat-no-commit",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "error_cb": lambda e: ERRORS.append(e),
    }
    config.update(extra)
    return Consumer(config)


ERRORS = []


def consume(topic, partition, offset, count, timeout_s=20):
    consumer = new_consumer()
    out = []
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            out.append(msg)
    finally:
        consumer.close()
    return out


def payload(i):
    # Compressible, so every codec has something to do.
    return (f'{{"n":{i},"text":"' + "smarteros order created " * 40 + '"}').encode()


@pytest.mark.parametrize("acks", ACKS)
@pytest.mark.parametrize("codec", CODECS)
def test_produce_consume_codec_acks(codec, acks):
    topic = tenant_topic(unique(f"rdk_{codec}_{acks}"))
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "compression.type": codec,
            "acks": acks,
            "linger.ms": 20,
            "enable.idempotence": False,
            "error_cb": lambda e: ERRORS.append(e),
        }
    )
    n = 50
    messages = [(f"key-{i}".encode(), payload(i), [("i", str(i).encode()), ("codec", codec.encode())]) for i in range(n)]
    reports = produce_all(producer, topic, messages)
    if acks != "0":
        # With acks, the reports carry the assigned offsets.
        assert [m.offset() for m in reports] == list(range(n))
    got = consume(topic, 0, 0, n)
    assert len(got) == n, f"consumed {len(got)} of {n}"
    assert [m.offset() for m in got] == list(range(n))
    assert [m.value() for m in got] == [v for _, v, _ in messages]
    assert [m.key() for m in got] == [k for k, _, _ in messages]
    assert [m.headers() for m in got] == [h for _, _, h in messages]
    ts_type, ts = got[0].timestamp()
    assert ts_type == confluent_kafka.TIMESTAMP_CREATE_TIME
    assert abs(ts - time.time() * 1000) < 60_000
    assert topic_stats(topic)["partitions"][0]["high_watermark"] == n


def stored_size(codec, n):
    topic = tenant_topic(unique(f"rdk_size_{codec}"))
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "compression.type": codec, "linger.ms": 50})
    produce_all(producer, topic, [(None, payload(i), None) for i in range(n)])
    return topic_stats(topic)["partitions"][0]["size_bytes"]


@pytest.mark.parametrize("codec", CODECS[1:])
def test_compressed_batches_are_stored_as_produced(codec):
    # compression.type=producer (what DescribeConfigs reports): batches stay compressed. A
    # batch stored at its uncompressed size means the client sent it uncompressed: librdkafka
    # does that when it decides, from ApiVersions, that the broker lacks the codec.
    n = 200
    raw = n * len(payload(0))
    assert stored_size("none", n) >= raw
    size = stored_size(codec, n)
    assert size < raw / 4, f"{codec}: {size} bytes stored for {raw} bytes of values"


def test_idempotent_producer_1000_in_order():
    topic = tenant_topic(unique("rdk_idempotent"))
    producer = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "batch.num.messages": 100,
            "max.in.flight.requests.per.connection": 5,
            "error_cb": lambda e: ERRORS.append(e),
        }
    )
    n = 1000
    reports = produce_all(producer, topic, [(None, f"msg-{i}".encode(), None) for i in range(n)], partition=0)
    assert [m.offset() for m in reports] == list(range(n))
    fatal = [e for e in ERRORS if e.fatal()]
    assert not fatal, fatal
    got = consume(topic, 0, 0, n)
    assert len(got) == n
    assert [m.value() for m in got] == [f"msg-{i}".encode() for i in range(n)]
    assert [m.offset() for m in got] == list(range(n))
    assert topic_stats(topic)["partitions"][0]["high_watermark"] == n


def test_consumer_with_group_id_and_assign_works_without_coordinator():
    # librdkafka starts its group machinery as soon as group.id is set; with assign() and no
    # commits that must not stop consumption.
    topic = tenant_topic(unique("rdk_assign"))
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    produce_all(producer, topic, [(None, f"v{i}".encode(), None) for i in range(10)])
    before = len(ERRORS)
    got = consume(topic, 0, 4, 6)
    assert [m.value() for m in got] == [f"v{i}".encode() for i in range(4, 10)]
    new = [str(e) for e in ERRORS[before:]]
    print("client errors while consuming:", new)


def test_offsets_for_times_and_watermarks():
    topic = tenant_topic(unique("rdk_times"))
    base = (int(time.time()) - 3600) * 1000
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 50})
    for i in range(6):
        producer.produce(topic, value=f"t{i}".encode(), partition=0, timestamp=base + i * 1000)
    assert producer.flush(30) == 0
    consumer = new_consumer()
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 6)
        (tp,) = consumer.offsets_for_times([TopicPartition(topic, 0, base + 2500)], timeout=10)
        assert tp.error is None and tp.offset == 3
        (tp,) = consumer.offsets_for_times([TopicPartition(topic, 0, base + 6000)], timeout=10)
        assert tp.offset == -1  # OFFSET_END: no record that late
    finally:
        consumer.close()


def test_envelope_for_another_tenant_is_refused():
    topic = f"smarteros.{TENANT}.shopify.order_created"
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "retries": 0})
    produce_all(producer, topic, [(None, b"raw", None)])
    reports = []
    producer.produce(
        topic,
        value=b'{"tenant_id":"other","service":"shopify","event_type":"order_created"}',
        on_delivery=lambda err, msg: reports.append(err),
    )
    assert producer.flush(30) == 0
    (err,) = reports
    assert err is not None
    assert err.code() == KafkaError.INVALID_RECORD, err


def test_admin_client():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topic = tenant_topic(unique("rdk_admin"))
    futures = admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)], operation_timeout=10)
    futures[topic].result(15)
    md = admin.list_topics(timeout=10)
    assert topic in md.topics
    assert sorted(md.topics[topic].partitions) == [0, 1]
    assert list(md.brokers) == [0]

    (res,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    entries = res.result(15)
    assert entries["retention.ms"].value == "604800000"
    assert entries["retention.ms"].source == confluent_kafka.admin.ConfigSource.DEFAULT_CONFIG.value

    resource = ConfigResource("topic", topic, incremental_configs=[
        confluent_kafka.admin.ConfigEntry(
            "retention.ms", "7776000000", incremental_operation=confluent_kafka.admin.AlterConfigOpType.SET
        )
    ])
    (f,) = admin.incremental_alter_configs([resource]).values()
    f.result(15)
    (res,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    entries = res.result(15)
    assert entries["retention.ms"].value == "7776000000"
    assert entries["retention.ms"].source == confluent_kafka.admin.ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    bad = tenant_topic(unique("rdk_rf3"))
    futures = admin.create_topics([NewTopic(bad, num_partitions=1, replication_factor=3)])
    with pytest.raises(KafkaException) as info:
        futures[bad].result(15)
    assert info.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR

    admin.delete_topics([topic], operation_timeout=10)[topic].result(15)
    assert topic not in admin.list_topics(timeout=10).topics
