#!/usr/bin/env python3
"""Kafka-path benchmark: librdkafka (confluent-kafka) producing to and consuming from Herald,
beside NATS JetStream (file storage) on the same machine in the same run.

Usage: bench/run-kafka-bench  (installs the clients, builds Herald, runs this, updates
BENCHMARKS.md). Every system gets the same payload (a 1 KiB seed envelope), the same number of
records and the same in-flight window; the median of --runs runs is reported.
"""

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def seed_record(size):
    base = ('{"event_id":"5f0c7e4e-9a55-4a55-9b7c-6a8f1f1f2b10","event_type":"order_created",'
            '"tenant_id":"76953480-3","service":"shopify","timestamp":"2025-11-23T12:00:00Z",'
            '"user_id":"user_abc","data":{"order_id":450789469,"total_price":"199990","note":"')
    pad = max(0, size - len(base) - 3)
    return (base + "x" * pad + '"}}').encode()


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


ADMIN_KEY = "bench-admin-key-0123456789abcdef"
TENANT_PASSWORD = "bench-tenant-password-1"


def start_herald(binary, fsync, listener="PLAINTEXT=PLAINTEXT://127.0.0.1:0"):
    data = tempfile.mkdtemp(prefix="herald-bench-")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--http-addr", "127.0.0.1:0",
         "--kafka-listener", listener, "--fsync", fsync],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "HERALD_LOG": "warn", "HERALD_ADMIN_API_KEY": ADMIN_KEY})
    kafka = None
    http = None
    deadline = time.time() + 60
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"Kafka \S+\s+(\S+)", line)
        if m:
            kafka = m.group(1)
        if line.strip().startswith("HTTP API"):
            http = line.split()[2]
            break
    if kafka is None:
        proc.kill()
        raise SystemExit("herald did not start")
    proc.http = http
    return proc, data, kafka


def secure_setup(binary, proc, data, topic):
    """A tenant as `herald tenant create` makes it, and its topic created by the admin; returns
    the librdkafka settings of that tenant over SASL_SSL with SCRAM-SHA-256."""
    env = {**os.environ, "HERALD_SERVER": proc.http, "HERALD_API_KEY": ADMIN_KEY}
    subprocess.run([binary, "tenant", "create", "76953480-3", "--password-stdin"],
                   input=TENANT_PASSWORD + "\n", env=env, check=True, capture_output=True, text=True)
    subprocess.run([binary, "topic", "create", topic], env=env, check=True, capture_output=True)
    return {"security.protocol": "SASL_SSL", "ssl.ca.location": os.path.join(data, "tls", "ca.pem"),
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "tenant-76953480-3",
            "sasl.password": TENANT_PASSWORD}


def stop(proc, data):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(data, ignore_errors=True)


def kafka_produce(bootstrap, topic, payload, count, window, conf=None):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    if conf is None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
            f.result()
    p = Producer({**(conf or {}), "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1,
                  "batch.num.messages": 10000, "queue.buffering.max.messages": window,
                  "enable.idempotence": False})
    lat = []
    errors = []

    def on_delivery(t):
        def cb(err, _msg):
            if err is not None:
                errors.append(err)
            else:
                lat.append(time.perf_counter() - t)
        return cb

    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                p.produce(topic, payload, on_delivery=on_delivery(time.perf_counter()))
                break
            except BufferError:
                p.poll(0.001)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(120)
    elapsed = time.perf_counter() - start
    if errors or len(lat) != count:
        raise SystemExit(f"{len(errors)} delivery errors, {len(lat)}/{count} delivered: {errors[:3]}")
    return count / elapsed, count * len(payload) / elapsed / 1e6, percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3


def kafka_consume(bootstrap, topic, count, conf=None):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({**(conf or {}), "bootstrap.servers": bootstrap,
                  "group.id": "smarteros.76953480-3.bench", "enable.auto.commit": False,
                  "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760})
    c.assign([TopicPartition(topic, 0, 0)])
    got = 0
    errors = []
    start = time.perf_counter()
    while got < count:
        msgs = c.consume(num_messages=10000, timeout=5)
        if not msgs:
            break
        for m in msgs:
            if m.error() is None:
                got += 1
            elif len(errors) < 3:
                errors.append(m.error())
    elapsed = time.perf_counter() - start
    c.close()
    if got < count:
        raise SystemExit(f"consumed {got}/{count} records: {errors}")
    return got / elapsed, got * 1024 / elapsed / 1e6


async def nats_run(port, payload, count, window):
    import nats
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    await js.add_stream(name="BENCH", subjects=["bench.>"], storage="file")
    lat = []
    sem = asyncio.Semaphore(window)

    async def one():
        t = time.perf_counter()
        await js.publish("bench.orders", payload)
        lat.append(time.perf_counter() - t)
        sem.release()

    start = time.perf_counter()
    tasks = []
    for _ in range(count):
        await sem.acquire()
        tasks.append(asyncio.ensure_future(one()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    produce = (count / elapsed, count * len(payload) / elapsed / 1e6, percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3)

    from nats.js.api import AckPolicy, ConsumerConfig
    # No acknowledgements, as the Kafka consumer above commits nothing.
    sub = await js.pull_subscribe("bench.orders", durable="bench",
                                  config=ConsumerConfig(ack_policy=AckPolicy.NONE))
    got = 0
    start = time.perf_counter()
    while got < count:
        try:
            msgs = await sub.fetch(1000, timeout=5)
        except nats.errors.TimeoutError:
            break
        got += len(msgs)
    elapsed = time.perf_counter() - start
    await nc.close()
    return produce, (got / elapsed, got * len(payload) / elapsed / 1e6)


def nats_bench(payload, count, window):
    port = 14222
    store = tempfile.mkdtemp(prefix="bench-nats-")
    conf = Path(store) / "nats.conf"
    conf.write_text(f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{store}/js" }}\n')
    proc = subprocess.Popen(["nats-server", "-c", str(conf), "-js"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        return asyncio.run(nats_run(port, payload, count, window))
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(store, ignore_errors=True)


def metadata_scale(binary, topics):
    """Creates `topics` topics over Kafka, then times a Metadata request for all of them (what
    regex-subscribing consumers poll)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    proc, data, kafka = start_herald(binary, "always")
    try:
        admin = AdminClient({"bootstrap.servers": kafka})
        start = time.perf_counter()
        for base in range(0, topics, 1000):
            batch = [NewTopic(f"smarteros.t{i}.bench.order_created", num_partitions=1, replication_factor=1)
                     for i in range(base, min(topics, base + 1000))]
            for f in admin.create_topics(batch, request_timeout=120).values():
                f.result()
        created = time.perf_counter() - start
        timings = []
        for _ in range(5):
            t = time.perf_counter()
            md = admin.list_topics(timeout=120)
            timings.append(time.perf_counter() - t)
            if len(md.topics) < topics:
                raise SystemExit(f"metadata listed {len(md.topics)} topics, expected {topics}")
        return created, statistics.median(timings) * 1e3
    finally:
        stop(proc, data)


def median_run(fn, runs, key=0):
    results = [fn() for _ in range(runs)]
    results.sort(key=lambda r: r[key])
    return results[len(results) // 2]


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} × {cpu}, {platform.system()} {platform.release()}"


def record(path, body):
    begin, end = "<!-- bench-kafka:begin -->", "<!-- bench-kafka:end -->"
    section = f"{begin}\n{body}{end}\n"
    text = Path(path).read_text() if Path(path).exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end):].lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + section
    Path(path).write_text(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--herald", default="target/release/herald")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--window", type=int, default=10_000, help="records in flight per producer")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--output", default="BENCHMARKS.md")
    ap.add_argument("--metadata-topics", type=int, default=100_000)
    args = ap.parse_args()
    payload = seed_record(args.size)
    rows = []

    for fsync in ("always", "interval"):
        def run(fsync=fsync):
            proc, data, kafka = start_herald(args.herald, fsync)
            try:
                prod = kafka_produce(kafka, "smarteros.76953480-3.shopify.order_created", payload, args.records, args.window)
                cons = kafka_consume(kafka, "smarteros.76953480-3.shopify.order_created", args.records)
                return prod + cons
            finally:
                stop(proc, data)
        r = median_run(run, args.runs)
        rows.append((f"Herald (fsync {fsync}), librdkafka acks=all", r))
        print(rows[-1], file=sys.stderr)

    # Production settings: a tenant's SCRAM user over SASL_SSL, every request authorized.
    def secure_run():
        topic = "smarteros.76953480-3.shopify.order_created"
        proc, data, kafka = start_herald(args.herald, "always", "SASL_SSL=SASL_SSL://127.0.0.1:0")
        try:
            conf = secure_setup(args.herald, proc, data, topic)
            prod = kafka_produce(kafka, topic, payload, args.records, args.window, conf)
            cons = kafka_consume(kafka, topic, args.records, conf)
            return prod + cons
        finally:
            stop(proc, data)
    r = median_run(secure_run, args.runs)
    rows.append(("Herald (fsync always) over SASL_SSL, SCRAM-SHA-256 tenant user with ACLs", r))
    print(rows[-1], file=sys.stderr)

    def nrun():
        (p, c) = nats_bench(payload, args.records, args.window)
        return p + c
    r = median_run(nrun, args.runs)
    rows.append(("NATS 2.9 JetStream, file storage (no per-message fsync), nats-py", r))
    print(rows[-1], file=sys.stderr)

    created, md_ms = metadata_scale(args.herald, args.metadata_topics)
    print(f"metadata: {args.metadata_topics} topics created in {created:.1f}s, list {md_ms:.0f} ms", file=sys.stderr)

    body = "## Kafka path: librdkafka produce and consume (`bench/run-kafka-bench`)\n\n"
    body += f"- command: `{' '.join(sys.argv)}`\n"
    body += f"- machine: {machine()}; date {time.strftime('%Y-%m-%d')}\n"
    body += (f"- {args.records} records of {len(payload)} B per run, one producer with up to {args.window} in flight, "
             f"median of {args.runs} runs; the load generator shares the two cores with the server. "
             "NATS 2.9 cannot fsync per message, so compare it with Herald's interval mode; "
             "Herald's always-fsync figure is beside it. Latency is from produce() to delivery report (acks=all) "
             "or to the JetStream publish ack. Caveat: nats-py handles every JetStream publish acknowledgement in "
             "Python's event loop, so the NATS row is bounded by that client rather than by nats-server; it is "
             "a lower bound for NATS, not a like-for-like server comparison. The SASL_SSL row is Herald as a "
             "platform team runs it: TLS (rustls), a tenant's SCRAM user, and every request authorized "
             "against the tenant's ACLs.\n\n")
    body += "| system | produce msg/s | produce MB/s | p50 ms | p99 ms | consume msg/s | consume MB/s |\n"
    body += "|---|---:|---:|---:|---:|---:|---:|\n"
    for name, r in rows:
        body += f"| {name} | {r[0]:.0f} | {r[1]:.1f} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.0f} | {r[5]:.1f} |\n"
    body += (f"\nMetadata with {args.metadata_topics} topics (what regex-subscribed consumers poll): created over "
             f"Kafka CreateTopics in {created:.1f} s; a Metadata request for all topics answered in {md_ms:.0f} ms "
             "(median of 5, librdkafka `list_topics`).\n")
    print(body)
    record(args.output, body)


if __name__ == "__main__":
    main()
