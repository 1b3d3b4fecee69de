"""Consumer groups against Herald, with real clients.

kafka-python 3.x (in this process, and as separate member processes) and confluent-kafka
(librdkafka) join groups, commit and fetch offsets, rebalance on leave and on session expiry;
Herald's group HTTP endpoints (`GET /v1/groups[/{group}]`, `POST .../reset-offsets`,
`DELETE /v1/groups/{group}`) and the `kafka_consumer_lag` metrics are checked against the same
groups.

Run by compat/run as the `groups` suite, with kafka-python 3.x first on PYTHONPATH and against a
server started with HERALD_GROUP_INITIAL_REBALANCE_DELAY_MS=0 (Kafka's 3 s initial rebalance
delay would stall every first join). Needs HERALD_KAFKA, HERALD_HTTP, HERALD_API_KEY and
HERALD_BIN (the binary: the restart test runs a server of its own).

`python test_groups.py member GROUP TOPIC NAME` runs one group member, reporting what it does as
JSON lines on stdout (the three-member test starts these and kills one with SIGKILL).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import kafka
import kafka.errors
import pytest
import requests
from confluent_kafka import Consumer as RdConsumer
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
from confluent_kafka import TopicPartition as RdTopicPartition
from confluent_kafka.admin import AdminClient as RdAdminClient
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

BOOTSTRAP = os.environ["HERALD_KAFKA"]
HTTP = os.environ["HERALD_HTTP"].rstrip("/")
API_KEY = os.environ["HERALD_API_KEY"]
HERALD_BIN = os.environ.get("HERALD_BIN", "")
KP_MAJOR = int(kafka.__version__.split(".")[0])
TENANT = "76953480-3"
OTHER_TENANT = "12345678-5"

# Small timeouts so that evictions and rebalances happen within the suite's time budget.
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
GROUP_CONFIG = dict(
    auto_offset_reset="earliest",
    enable_auto_commit=False,
    session_timeout_ms=SESSION_TIMEOUT_MS,
    heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    # Also the JoinGroup rebalance timeout.
    max_poll_interval_ms=20000,
)


# --- helpers ----------------------------------------------------------------------------------


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def tenant_topic(event_type, tenant=TENANT, service="compat"):
    return f"smarteros.{tenant}.{service}.{event_type}"


def http(method, path, body=None, base=None, key=None):
    return requests.request(
        method,
        f"{base or HTTP}{path}",
        json=body,
        headers={"X-API-Key": key or API_KEY},
        timeout=30,
    )


def describe_group(group, **kw):
    r = http("GET", f"/v1/groups/{group}", **kw)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def committed_http(group, **kw):
    """{(topic, partition): committed} from GET /v1/groups/{group}."""
    return {(o["topic"], o["partition"]): o["committed"] for o in describe_group(group, **kw)["offsets"]}


def listed_groups(**kw):
    r = http("GET", "/v1/groups", **kw)
    assert r.status_code == 200, r.text
    return {g["group"]: g for g in r.json()["groups"]}


def wait_for(what, predicate, timeout_s=20, interval_s=0.1):
    """Polls `predicate` until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def wait_group_state(group, state, timeout_s=15, **kw):
    return wait_for(
        f"group {group} in state {state}",
        lambda: describe_group(group, **kw)["state"] == state,
        timeout_s,
    )


def new_admin(bootstrap=BOOTSTRAP):
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="herald-compat", request_timeout_ms=15000)


def create_topic(name, partitions, bootstrap=BOOTSTRAP):
    admin = new_admin(bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def produce(topic, values, partition=None, bootstrap=BOOTSTRAP):
    """Sends values (bytes or str) in order; returns their RecordMetadata."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        futures = []
        for i, v in enumerate(values):
            p = partition(i) if callable(partition) else partition
            futures.append(producer.send(topic, v.encode() if isinstance(v, str) else v, partition=p))
        producer.flush()
        return [f.get(timeout=15) for f in futures]
    finally:
        producer.close()


def group_consumer(group, topics=(), pattern=None, bootstrap=BOOTSTRAP, **extra):
    config = dict(GROUP_CONFIG, bootstrap_servers=bootstrap, group_id=group, client_id=f"compat-{group}")
    config.update(extra)
    consumer = KafkaConsumer(**config)
    if pattern is not None:
        consumer.subscribe(pattern=pattern)
    else:
        consumer.subscribe(list(topics))
    return consumer


def poll_records(consumer, count, timeout_s=20, settle_s=1.0):
    """Polls until `count` records arrived, then `settle_s` more (to catch extra ones)."""
    out = []
    deadline = time.monotonic() + timeout_s
    # Also until the consumer has an assignment, so that "nothing more" means something.
    while (len(out) < count or not consumer.assignment()) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(records)
    settle = time.monotonic() + settle_s
    while time.monotonic() < settle:
        for records in consumer.poll(timeout_ms=100).values():
            out.extend(records)
    return out


def consume_in_group(group, topics, count, settle_s=1.0, **kw):
    """Joins, reads `count` records (and checks for more for settle_s), commits, leaves.
    Returns [(topic, partition, offset, value)] sorted."""
    consumer = group_consumer(group, topics, **kw)
    try:
        records = poll_records(consumer, count, settle_s=settle_s)
        consumer.commit()
    finally:
        consumer.close()
    return sorted((r.topic, r.partition, r.offset, r.value.decode()) for r in records)


def metrics_text(base=None):
    r = requests.get(f"{base or HTTP}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return r.text


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_samples(text, name):
    """[(labels dict, value str)] of every sample of `name`."""
    out = []
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m and m.group(1) == name:
            out.append((dict(LABEL.findall(m.group(2))), m.group(3)))
    return out


def rd_consumer(group, bootstrap=BOOTSTRAP, **extra):
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "enable.partition.eof": False,
    }
    config.update(extra)
    return RdConsumer(config)


def rd_poll(consumer, count, timeout_s=20, settle_s=1.0):
    out = []
    deadline = time.monotonic() + timeout_s
    while (len(out) < count or not consumer.assignment()) and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        out.append(msg)
    settle = time.monotonic() + settle_s
    while time.monotonic() < settle:
        msg = consumer.poll(0.1)
        if msg is not None and not msg.error():
            out.append(msg)
    return out


def test_client_versions():
    import confluent_kafka

    print(f"kafka-python {kafka.__version__}; confluent-kafka {confluent_kafka.__version__}")
    assert KP_MAJOR == 3, kafka.__version__


# --- the seed's six consumer groups -----------------------------------------------------------

# BROKER-ARCHITECTURE's consumer-group table, its `*` globs written as client regexes.
SEED_GROUPS = {
    "audit-logger": r"^smarteros\.[^.]+\.[^.]+\.[^.]+$",
    "metabase-sync": r"^smarteros\.[^.]+\.[^.]+\.order_.*$",
    "dashboard-realtime": r"^smarteros\.[^.]+\.[^.]+\.order_created$",
    "alerting-system": r"^smarteros\.[^.]+\.[^.]+\.workflow_failed$",
    "email-notifications": r"^smarteros\.[^.]+\.odoo\.invoice_created$",
    "whatsapp-bot": r"^smarteros\.[^.]+\.chatwoot\.handoff_.*$",
}

SEED_EVENTS = [
    ("shopify", "order_created"),
    ("shopify", "order_updated"),
    ("shopify", "order_cancelled"),
    ("shopify", "product_created"),
    ("odoo", "sale_order_confirmed"),
    ("odoo", "invoice_created"),
    ("odoo", "payment_registered"),
    ("chatwoot", "message_created"),
    ("chatwoot", "handoff_requested"),
    ("n8n", "workflow_failed"),
    ("n8n", "workflow_completed"),
    ("botpress", "handoff_triggered"),
]

# What each group must get of SEED_EVENTS, written out by hand (for both tenants).
SEED_EXPECTED = {
    "audit-logger": set(SEED_EVENTS),
    "metabase-sync": {("shopify", "order_created"), ("shopify", "order_updated"), ("shopify", "order_cancelled")},
    "dashboard-realtime": {("shopify", "order_created")},
    "alerting-system": {("n8n", "workflow_failed")},
    "email-notifications": {("odoo", "invoice_created")},
    "whatsapp-bot": {("chatwoot", "handoff_requested")},
}
# Not under the `smarteros.` prefix: no group's pattern selects it.
FOREIGN_TOPIC = "legacy.orders.order_created"

_seed_topics_made = []


def seed_topics():
    """Creates one record in each SEED_EVENTS topic of two tenants (once per run)."""
    if _seed_topics_made:
        return _seed_topics_made[0]
    topics = {}
    create_topic(FOREIGN_TOPIC, 1)  # only tenant topics are created on first use
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5)
    try:
        futures = []
        for tenant in (TENANT, OTHER_TENANT):
            for service, event_type in SEED_EVENTS:
                topic = f"smarteros.{tenant}.{service}.{event_type}"
                topics[topic] = (service, event_type)
                event = {
                    "event_id": str(uuid.uuid4()),
                    "event_type": event_type,
                    "tenant_id": tenant,
                    "service": service,
                    "timestamp": datetime.now(timezone.utc).isoformat(),
                    "data": {},
                }
                futures.append(producer.send(topic, json.dumps(event).encode()))
        futures.append(producer.send(FOREIGN_TOPIC, b'{"order_id": 1}'))
        producer.flush()
        for f in futures:
            f.get(timeout=15)
    finally:
        producer.close()
    _seed_topics_made.append(topics)
    return topics


def all_topics():
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=None)
    try:
        return set(consumer.topics())
    finally:
        consumer.close()


def record_count(topics):
    total = 0
    for t in topics:
        r = http("GET", f"/v1/topics/{t}")
        assert r.status_code == 200, r.text
        total += sum(p["high_watermark"] for p in r.json()["partitions"])
    return total


def expected_for(group, made, existing):
    """The topics `group`'s pattern selects, checked against the hand-written table."""
    regex = re.compile(SEED_GROUPS[group])
    selected = {t for t in existing if regex.search(t)}
    ours = {t for t in selected if t in made}
    by_hand = {t for t, ev in made.items() if ev in SEED_EXPECTED[group]}
    assert ours == by_hand, (group, sorted(ours ^ by_hand))
    assert FOREIGN_TOPIC not in selected
    return selected


def test_seed_groups_get_exactly_their_topics_kafka_python():
    made = seed_topics()
    existing = all_topics()
    assert set(made) | {FOREIGN_TOPIC} <= existing
    for group, pattern in SEED_GROUPS.items():
        expected = expected_for(group, made, existing)
        consumer = group_consumer(group, pattern=pattern)
        try:
            records = poll_records(consumer, record_count(expected), settle_s=0.5)
            assigned = {tp.topic for tp in consumer.assignment()}
            consumer.commit()
            # While the member is in the group, Herald shows its decoded assignment.
            d = describe_group(group)
            (member,) = d["members"]
            assert d["state"] == "Stable", d
            assert {a["topic"] for a in member["assignment"]} == expected, (group, member)
            assert d["lag"] == 0, d
        finally:
            consumer.close()
        got = {r.topic for r in records}
        assert assigned == expected, (group, sorted(assigned ^ expected))
        assert got == expected, (group, sorted(got ^ expected))
        assert len(records) == record_count(expected), group
        wait_group_state(group, "Empty")
        d = describe_group(group)
        assert d["members"] == [], d
        assert {o["topic"] for o in d["offsets"]} == expected
    groups = listed_groups()
    for group in SEED_GROUPS:
        assert groups[group]["protocol_type"] == "consumer", groups[group]


def test_seed_groups_get_exactly_their_topics_librdkafka():
    made = seed_topics()
    existing = all_topics()
    for group, pattern in SEED_GROUPS.items():
        expected = expected_for(group, made, existing)
        name = f"{group}-librdkafka"
        consumer = rd_consumer(name)
        try:
            consumer.subscribe([pattern])  # a leading ^ makes it a regex subscription
            messages = rd_poll(consumer, record_count(expected), settle_s=0.5)
            assigned = {tp.topic for tp in consumer.assignment()}
            consumer.commit(asynchronous=False)
            committed = consumer.committed(consumer.assignment(), timeout=15)
        finally:
            consumer.close()
        got = {m.topic() for m in messages}
        assert assigned == expected, (group, sorted(assigned ^ expected))
        assert got == expected, (group, sorted(got ^ expected))
        assert len(messages) == record_count(expected), group
        assert {tp.topic for tp in committed if tp.offset >= 0} == expected
        assert {o["topic"] for o in describe_group(name)["offsets"]} == expected


# --- three members in separate processes ------------------------------------------------------


def member_main(group, topic, name):
    """One group member: polls, reports records, commits after every batch; SIGTERM closes it."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def emit(**event):
        print(json.dumps(event), flush=True)

    consumer = KafkaConsumer(
        topic, bootstrap_servers=BOOTSTRAP, group_id=group, client_id=name, **GROUP_CONFIG
    )
    emit(ev="started")
    last = None
    while not stop.is_set():
        batch = consumer.poll(timeout_ms=200)
        assigned = sorted(tp.partition for tp in consumer.assignment())
        if assigned != last:
            emit(ev="assigned", partitions=assigned)
            last = assigned
        records = [r for rs in batch.values() for r in rs]
        if not records:
            continue
        emit(ev="records", records=[[r.partition, r.offset, r.value.decode()] for r in records])
        positions = {tp.partition: consumer.position(tp) for tp in consumer.assignment()}
        try:
            consumer.commit()
            emit(ev="committed", offsets=positions)
        except kafka.errors.KafkaError as e:
            emit(ev="commit_failed", error=repr(e))
    consumer.close()
    emit(ev="closed")


class Member:
    """A member process; its reports are collected with their arrival time."""

    def __init__(self, group, topic, name):
        self.name = name
        self.events = []
        self.lock = threading.Lock()
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "member", group, topic, name],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append((time.monotonic(), event))

    def of(self, kind):
        with self.lock:
            return [(t, e) for t, e in self.events if e["ev"] == kind]

    def assignment(self):
        a = self.of("assigned")
        return a[-1][1]["partitions"] if a else None

    def deliveries(self):
        """[(time, partition, offset, value)]"""
        return [(t, p, o, v) for t, e in self.of("records") for p, o, v in e["records"]]

    def commits(self):
        """[(time, {partition: committed offset})]"""
        return [(t, {int(p): o for p, o in e["offsets"].items()}) for t, e in self.of("committed")]

    def terminate(self, timeout_s=20):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout_s)
        self.reader.join(timeout=5)
        assert self.of("closed"), f"{self.name} did not close cleanly: {self.stderr_text()}"

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=5)

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]


class ContinuousProducer(threading.Thread):
    """Produces `seq-N` to partition N % partitions every `interval_s` until stopped."""

    def __init__(self, topic, partitions, interval_s=0.02):
        super().__init__(daemon=True)
        self.topic, self.partitions, self.interval_s = topic, partitions, interval_s
        self.halt = threading.Event()
        self.futures = []
        self.producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=5, acks="all")

    def run(self):
        i = 0
        while not self.halt.is_set():
            value = f"seq-{i}"
            self.futures.append((value, self.producer.send(self.topic, value.encode(), partition=i % self.partitions)))
            i += 1
            time.sleep(self.interval_s)

    def finish(self):
        """Stops; returns {(partition, offset): value} of everything produced."""
        self.halt.set()
        self.join()
        self.producer.flush()
        produced = {}
        for value, f in self.futures:
            md = f.get(timeout=15)
            produced[(md.partition, md.offset)] = value
        self.producer.close()
        return produced


def test_three_members_leave_kill_and_no_loss():
    partitions = 6
    topic = tenant_topic(unique("group3"))
    group = unique("orders-workers")
    create_topic(topic, partitions)
    everyone = set(range(partitions))
    producer = ContinuousProducer(topic, partitions)
    producer.start()
    members = {n: Member(group, topic, n) for n in ("a", "b", "c")}
    try:
        a, b, c = members["a"], members["b"], members["c"]

        def split(ms):
            parts = [m.assignment() for m in ms]
            if any(not p for p in parts):
                return None
            flat = [x for p in parts for x in p]
            return parts if len(flat) == len(set(flat)) and set(flat) == everyone else None

        # 1. Three members: the six partitions split two by two (range assignor), no overlap.
        parts = wait_for("a 3-way split", lambda: split([a, b, c]), timeout_s=45)
        assert sorted(len(p) for p in parts) == [2, 2, 2], parts
        d = describe_group(group)
        assert d["state"] == "Stable" and len(d["members"]) == 3, d
        by_client = {m["client_id"]: m["assignment"] for m in d["members"]}
        assert set(by_client) == {"a", "b", "c"}, d
        for name, m in members.items():
            (entry,) = by_client[name]
            assert entry["topic"] == topic and sorted(entry["partitions"]) == m.assignment(), (name, d)
        time.sleep(1.5)  # let everyone consume and commit a little

        # 2. c leaves cleanly (LeaveGroup): a and b take its partitions at once, before any
        #    session timeout could have noticed.
        left = time.monotonic()
        c.terminate()
        parts = wait_for("a 2-way split after c left", lambda: split([a, b]), timeout_s=20)
        after_leave = time.monotonic() - left
        assert sorted(len(p) for p in parts) == [3, 3], parts
        assert after_leave < SESSION_TIMEOUT_MS / 1000 - 1, f"rebalance after LeaveGroup took {after_leave:.1f}s"
        time.sleep(1.5)

        # 3. b is killed (no LeaveGroup): the group keeps it until its session times out, then
        #    a gets all six partitions.
        b_held = set(b.assignment())
        killed = time.monotonic()
        b.kill()
        time.sleep(2)
        d = describe_group(group)
        assert len(d["members"]) == 2, ("b evicted before its session timeout", d)
        wait_for("a owns every partition", lambda: split([a]), timeout_s=SESSION_TIMEOUT_MS / 1000 + 15)
        evicted_after = time.monotonic() - killed
        assert evicted_after >= SESSION_TIMEOUT_MS / 1000 - HEARTBEAT_INTERVAL_MS / 1000 - 1, evicted_after
        d = describe_group(group)
        (only,) = d["members"]
        assert only["client_id"] == "a", d
        time.sleep(1)

        # 4. Stop producing; a catches up and commits everything.
        produced = producer.finish()
        hw = {p: 1 + max(o for (pp, o) in produced if pp == p) for p in everyone}
        wait_for(
            "a to commit up to the high watermarks",
            lambda: committed_http(group) == {(topic, p): hw[p] for p in everyone},
            timeout_s=30,
        )
        d = describe_group(group)
        assert d["lag"] == 0, d
        a.terminate()
        wait_group_state(group, "Empty")

        # 5. Every produced record was consumed at least once, with its value.
        seen = {}
        for m in (a, b, c):
            for _, p, o, v in m.deliveries():
                seen.setdefault((p, o), set()).add(v)
        missing = sorted(k for k in produced if k not in seen)
        assert not missing, f"{len(missing)} of {len(produced)} produced records never consumed: {missing[:10]}"
        wrong = [(k, produced[k], seen[k]) for k in produced if seen[k] != {produced[k]}]
        assert not wrong, wrong[:10]
        assert len(produced) > 300, len(produced)

        # 6. Nothing is delivered again once committed: after a member's commit of offset N on
        #    p, no member receives an offset below N on p. Redeliveries happen only for what the
        #    killed member had not committed yet.
        commits = {p: [] for p in everyone}  # p -> [(time, committed offset, member)]
        for m in (a, b, c):
            for t, offs in m.commits():
                for p, n in offs.items():
                    commits[p].append((t, n, m.name))
        for p in everyone:
            commits[p].sort()
        violations = []
        for m in (a, b, c):
            for t, p, o, _ in m.deliveries():
                before = [(n, who) for tc, n, who in commits[p] if tc < t]
                if before:
                    n, who = max(before)
                    if o < n:
                        violations.append((m.name, p, o, f"after {who} committed {n}"))
        assert not violations, violations[:10]
        counts = {}
        for m in (a, b, c):
            for _, p, o, _ in m.deliveries():
                counts[(p, o)] = counts.get((p, o), 0) + 1
        dups = sorted(k for k, n in counts.items() if n > 1)
        assert all(p in b_held for p, _ in dups), ("redelivered outside the killed member's partitions", dups[:10])
        print(
            f"produced {len(produced)}, deliveries {sum(counts.values())}, redelivered {len(dups)} "
            f"(all from b's partitions {sorted(b_held)}); rebalance after leave {after_leave:.1f}s, "
            f"after kill {evicted_after:.1f}s"
        )

        # 7. A clean rejoin resumes exactly at the committed offsets: only new records arrive.
        d_member = Member(group, topic, "d")
        members["d"] = d_member
        wait_for("d owns every partition", lambda: split([d_member]), timeout_s=30)
        fresh = produce(topic, [f"fresh-{i}" for i in range(12)], partition=lambda i: i % partitions)
        expected = sorted((md.partition, md.offset, f"fresh-{i}") for i, md in enumerate(fresh))
        wait_for("d to receive the new records", lambda: len(d_member.deliveries()) >= 12, timeout_s=20)
        time.sleep(1)
        got = sorted((p, o, v) for _, p, o, v in d_member.deliveries())
        assert got == expected, got[:20]
        d_member.terminate()
    finally:
        if not producer.halt.is_set():
            producer.halt.set()
        for m in members.values():
            if m.proc.poll() is None:
                m.kill()


# --- committed offsets across a restart -------------------------------------------------------


class OwnHerald:
    """A herald of this test's own (HERALD_BIN), so it can be stopped and started again."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = None
        self.log_path = os.path.join(os.path.dirname(data_dir), "herald.log")
        self.log = open(self.log_path, "ab")

    def start(self):
        assert HERALD_BIN and os.access(HERALD_BIN, os.X_OK), f"HERALD_BIN={HERALD_BIN!r} is not executable"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env["HERALD_GROUP_INITIAL_REBALANCE_DELAY_MS"] = "0"
        self.proc = subprocess.Popen(
            [HERALD_BIN, "serve", "--data-dir", self.data_dir, "--http-addr", "127.0.0.1:0",
             "--kafka-addr", "PLAINTEXT://127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            text=True,
        )
        lines = []
        found = {}

        def read():
            for line in self.proc.stdout:
                lines.append(line)
                m = re.match(r"^\s*Kafka PLAINTEXT\s+(\S+)", line)
                if m:
                    found["kafka"] = m.group(1)
                m = re.match(r"^\s*HTTP API\s+(http://\S+)", line)
                if m:
                    found["http"] = m.group(1)

        threading.Thread(target=read, daemon=True).start()
        wait_for(f"herald's listeners (output: {lines})", lambda: len(found) == 2 or self.proc.poll() is not None, 30)
        assert len(found) == 2, f"herald exited: {''.join(lines)}"
        self.kafka, self.http = found["kafka"], found["http"]
        with open(os.path.join(self.data_dir, "admin-api-key")) as f:
            self.key = f.read().strip()
        wait_for("/health", lambda: requests.get(f"{self.http}/health", timeout=5).ok, 15)
        return self

    def stop(self):
        """SIGTERM; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()

    def log_tail(self, lines=40):
        with open(self.log_path, "rb") as f:
            text = f.read().decode(errors="replace")
        return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[-lines:])


def test_committed_offsets_survive_restart():
    workdir = tempfile.mkdtemp(prefix="herald-groups-restart.")
    data_dir = os.path.join(workdir, "data")
    os.mkdir(data_dir)
    server = OwnHerald(data_dir).start()
    topic = tenant_topic(unique("restart"))
    group = unique("restart-group")
    try:
        create_topic(topic, 3, bootstrap=server.kafka)
        produce(topic, [f"before-{i}" for i in range(30)], partition=lambda i: i % 3, bootstrap=server.kafka)
        # Consume everything in the group, but commit chosen offsets with metadata.
        chosen = {0: 4, 1: 7, 2: 10}
        consumer = group_consumer(group, [topic], bootstrap=server.kafka)
        try:
            assert len(poll_records(consumer, 30, settle_s=0.2)) == 30
            consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, f"meta-{p}", -1) for p, o in chosen.items()})
        finally:
            consumer.close()
        kw = dict(base=server.http, key=server.key)
        before = describe_group(group, **kw)
        assert before["lag"] == 6 + 3 + 0, before

        # SIGTERM, then a new server on the same data directory.
        assert server.stop() == 0
        server = OwnHerald(data_dir).start()
        kw = dict(base=server.http, key=server.key)

        after = describe_group(group, **kw)
        assert after["state"] == "Empty", after
        assert after["offsets"] == before["offsets"], (before, after)
        assert [(o["partition"], o["committed"], o["metadata"]) for o in after["offsets"]] == [
            (p, o, f"meta-{p}") for p, o in chosen.items()
        ]
        assert group in listed_groups(**kw)

        # OffsetFetch from both clients.
        admin = new_admin(server.kafka)
        try:
            offsets = admin.list_group_offsets(group)[group]
        finally:
            admin.close()
        assert {tp.partition: (om.offset, om.metadata) for tp, om in offsets.items()} == {
            p: (o, f"meta-{p}") for p, o in chosen.items()
        }
        rd = rd_consumer(group, bootstrap=server.kafka)
        try:
            got = rd.committed([RdTopicPartition(topic, p) for p in range(3)], timeout=15)
        finally:
            rd.close()
        assert {tp.partition: (tp.offset, tp.metadata) for tp in got} == {p: (o, f"meta-{p}") for p, o in chosen.items()}

        # The group resumes exactly there: nothing before the committed offsets comes back.
        produce(topic, [f"after-{i}" for i in range(3)], partition=lambda i: i % 3, bootstrap=server.kafka)
        got = consume_in_group(group, [topic], 6 + 3 + 0 + 3, bootstrap=server.kafka)
        expected = sorted(
            [(topic, 0, o, f"before-{o * 3}") for o in range(4, 10)]
            + [(topic, 1, o, f"before-{o * 3 + 1}") for o in range(7, 10)]
            + [(topic, p, 10, f"after-{p}") for p in range(3)]
        )
        assert got == expected, got
        assert describe_group(group, **kw)["lag"] == 0
    except BaseException:
        print(f"--- this test's herald (both runs), last lines ---\n{server.log_tail()}")
        raise
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


# --- HTTP view and metrics --------------------------------------------------------------------


def lag_metrics(group, base=None):
    text = metrics_text(base)
    per_partition = {
        (labels["topic"], int(labels["partition"])): value
        for labels, value in metric_samples(text, "kafka_consumer_lag")
        if labels.get("group") == group
    }
    total = [v for labels, v in metric_samples(text, "kafka_consumer_group_lag") if labels.get("group") == group]
    return text, per_partition, total


def test_http_describe_and_lag_metrics():
    topic = tenant_topic(unique("lag"))
    group = unique("dashboard")
    create_topic(topic, 3)
    sizes = {0: 10, 1: 20, 2: 5}
    for p, n in sizes.items():
        produce(topic, [f"p{p}-{i}" for i in range(n)], partition=p)
    consumer = group_consumer(group, [topic])
    try:
        assert len(poll_records(consumer, 35, settle_s=0.2)) == 35
        commits = {0: 3, 1: 20, 2: 0}
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in commits.items()})
        lag = {p: sizes[p] - commits[p] for p in sizes}  # 7, 0, 5

        d = describe_group(group)
        assert d["state"] == "Stable" and d["protocol_type"] == "consumer", d
        (member,) = d["members"]
        assert member["client_id"] == f"compat-{group}"
        assert member["member_id"].startswith(f"compat-{group}-"), member
        assert member["assignment"] == [{"topic": topic, "partitions": [0, 1, 2]}], member
        assert [(o["topic"], o["partition"], o["committed"], o["high_watermark"], o["lag"]) for o in d["offsets"]] == [
            (topic, p, commits[p], sizes[p], lag[p]) for p in range(3)
        ], d["offsets"]
        assert d["lag"] == sum(lag.values()) == 12
        assert listed_groups()[group] == {"group": group, "state": "Stable", "protocol_type": "consumer"}

        text, per_partition, total = lag_metrics(group)
        for p in range(3):
            line = f'kafka_consumer_lag{{group="{group}",topic="{topic}",partition="{p}"}} {lag[p]}'
            assert line in text.splitlines(), (line, [l for l in text.splitlines() if group in l])
        assert per_partition == {(topic, p): str(lag[p]) for p in range(3)}
        assert total == ["12"], total
        assert f'kafka_consumer_group_lag{{group="{group}"}} 12' in text.splitlines()

        # Lag follows the high watermark.
        produce(topic, [f"p0-{i}" for i in range(10, 14)], partition=0)
        d = describe_group(group)
        assert [o["lag"] for o in d["offsets"]] == [11, 0, 5] and d["lag"] == 16, d
        _, per_partition, total = lag_metrics(group)
        assert per_partition[(topic, 0)] == "11" and total == ["16"], (per_partition, total)
    finally:
        consumer.close()
    wait_group_state(group, "Empty")
    d = describe_group(group)
    assert d["members"] == [] and d["lag"] == 16, d
    assert http("GET", f"/v1/groups/{unique('never-seen')}").status_code == 404


def test_deleted_group_leaves_no_lag_series():
    # A deleted group has no offsets, so it must not keep exporting kafka_consumer_lag (a
    # stale series above 1000 would keep HighConsumerLag firing for a group that is gone).
    topic = tenant_topic(unique("lag_deleted"))
    group = unique("gone")
    produce(topic, [f"r{i}" for i in range(5)], partition=0)
    consumer = group_consumer(group, [topic])
    try:
        poll_records(consumer, 5, settle_s=0.2)
        consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(1, "", -1)})
    finally:
        consumer.close()
    _, per_partition, total = lag_metrics(group)
    assert per_partition == {(topic, 0): "4"} and total == ["4"], (per_partition, total)
    wait_group_state(group, "Empty")
    r = http("DELETE", f"/v1/groups/{group}")
    assert r.status_code == 204, r.text
    assert http("GET", f"/v1/groups/{group}").status_code == 404
    text, per_partition, total = lag_metrics(group)
    assert per_partition == {} and total == [], (
        f"GET /metrics after DELETE /v1/groups/{group} (204) still has: "
        + "; ".join(l for l in text.splitlines() if f'group="{group}"' in l)
    )


# --- reset-offsets over HTTP ------------------------------------------------------------------


def reset(group, body):
    return http("POST", f"/v1/groups/{group}/reset-offsets", body)


def plan_of(response):
    assert response.status_code == 200, (response.status_code, response.text)
    return {(r["topic"], r["partition"]): (r["previous"], r["new"]) for r in response.json()["partitions"]}


def rfc3339(ms, offset_hours=0):
    tz = timezone(timedelta(hours=offset_hours))
    text = datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def test_reset_offsets_over_http():
    uid = uuid.uuid4().hex[:10]
    a = tenant_topic(f"reset_{uid}_a")  # one partition: 5 records, T, 5 records
    b = tenant_topic(f"reset_{uid}_b")  # two partitions, 3 records each, all before T
    glob = tenant_topic(f"reset_{uid}_*")
    group = unique("replayer")
    create_topic(a, 1)
    create_topic(b, 2)
    produce(b, [f"b{i}" for i in range(6)], partition=lambda i: i % 2)
    for i in range(5):
        produce(a, [f"before-{i}"], partition=0)
    time.sleep(0.3)
    t_ms = int(time.time() * 1000)
    time.sleep(0.3)
    for i in range(5):
        produce(a, [f"after-{i}"], partition=0)
    end = {(a, 0): 10, (b, 0): 3, (b, 1): 3}

    consumer = group_consumer(group, [a, b])
    try:
        assert len(poll_records(consumer, 16, settle_s=0.2)) == 16
        consumer.commit()
        assert committed_http(group) == end
        assert describe_group(group)["state"] == "Stable"

        # Refused while the group has a live member, and nothing changes (dry run or not).
        for dry_run in (False, True):
            r = reset(group, {"topics": glob, "strategy": "earliest", "dry_run": dry_run})
            assert r.status_code == 409, (r.status_code, r.text)
            assert r.json()["error"]["code"] == "group_active", r.text
        assert committed_http(group) == end
    finally:
        consumer.close()
    wait_group_state(group, "Empty")

    # Dry run: the plan, and no change. The same instant written with another UTC offset gives
    # the same plan.
    for text in (rfc3339(t_ms), rfc3339(t_ms, 2), rfc3339(t_ms, -3)):
        r = reset(group, {"topics": glob, "strategy": "datetime", "value": text, "dry_run": True})
        assert r.json()["dry_run"] is True, r.text
        assert plan_of(r) == {(a, 0): (10, 5), (b, 0): (3, 3), (b, 1): (3, 3)}, (text, r.text)
    assert committed_http(group) == end

    # datetime: the group reads again exactly the five records produced after T.
    r = reset(group, {"topics": glob, "strategy": "datetime", "value": rfc3339(t_ms)})
    assert r.json()["dry_run"] is False
    assert plan_of(r) == {(a, 0): (10, 5), (b, 0): (3, 3), (b, 1): (3, 3)}
    assert committed_http(group) == {(a, 0): 5, (b, 0): 3, (b, 1): 3}
    got = consume_in_group(group, [a, b], 5)
    assert got == [(a, 0, 5 + i, f"after-{i}") for i in range(5)], got
    wait_group_state(group, "Empty")

    # earliest: everything again.
    assert plan_of(reset(group, {"topics": glob, "strategy": "earliest"})) == {
        (a, 0): (10, 0), (b, 0): (3, 0), (b, 1): (3, 0)
    }
    got = consume_in_group(group, [a, b], 16)
    assert len(got) == 16 and got[:5] == [(a, 0, i, f"before-{i}") for i in range(5)], got
    wait_group_state(group, "Empty")

    # offset 2 on every selected partition (and one past the end is clamped to it).
    assert plan_of(reset(group, {"topics": glob, "strategy": "offset", "value": 2})) == {
        (a, 0): (10, 2), (b, 0): (3, 2), (b, 1): (3, 2)
    }
    assert committed_http(group) == {(a, 0): 2, (b, 0): 2, (b, 1): 2}
    assert plan_of(reset(group, {"topics": a, "strategy": "offset", "value": 99, "dry_run": True})) == {(a, 0): (2, 10)}

    # shift-by -2 on topic a alone (an exact name is a glob too): 2 - 2 = 0.
    assert plan_of(reset(group, {"topics": a, "strategy": "shift-by", "value": -2})) == {(a, 0): (2, 0)}
    assert committed_http(group) == {(a, 0): 0, (b, 0): 2, (b, 1): 2}

    # latest, then shift-by -2 from there: the last two records of each partition.
    assert plan_of(reset(group, {"topics": glob, "strategy": "latest"})) == {
        (a, 0): (0, 10), (b, 0): (2, 3), (b, 1): (2, 3)
    }
    assert committed_http(group) == end
    assert consume_in_group(group, [a, b], 0) == []
    wait_group_state(group, "Empty")
    assert plan_of(reset(group, {"topics": glob, "strategy": "shift-by", "value": "-2"})) == {
        (a, 0): (10, 8), (b, 0): (3, 1), (b, 1): (3, 1)
    }
    got = consume_in_group(group, [a, b], 6)
    assert got == sorted(
        [(a, 0, 8, "after-3"), (a, 0, 9, "after-4")]
        + [(b, p, o, f"b{o * 2 + p}") for p in (0, 1) for o in (1, 2)]
    ), got
    wait_group_state(group, "Empty")

    # Errors: an unknown strategy, a missing value, a glob selecting nothing, a bad datetime.
    assert reset(group, {"topics": glob, "strategy": "sideways"}).status_code == 400
    assert reset(group, {"topics": glob, "strategy": "offset"}).status_code == 400
    assert reset(group, {"topics": glob, "strategy": "datetime", "value": "yesterday"}).status_code == 400
    assert reset(group, {"topics": tenant_topic(f"nothing_{uid}_*"), "strategy": "earliest"}).status_code == 404
    assert committed_http(group) == end


# --- admin clients ----------------------------------------------------------------------------


class GroupAdmin:
    """The group calls of KafkaAdminClient, in one shape for both majors: kafka-python 2.x has
    list_consumer_groups, describe_consumer_groups, list_consumer_group_offsets and
    delete_consumer_groups; 3.x renamed them list_groups, describe_groups, list_group_offsets
    and delete_groups and changed what they return."""

    def __init__(self):
        self.admin = new_admin()

    def close(self):
        self.admin.close()

    def list(self):
        """{group_id: protocol_type}"""
        if KP_MAJOR >= 3:
            return {g["group_id"]: g["protocol_type"] for g in self.admin.list_groups()}
        return dict(self.admin.list_consumer_groups())

    def describe(self, group):
        """(state, protocol_type, protocol, [(client_id, subscribed topics, [(topic, [partitions])])])"""
        if KP_MAJOR >= 3:
            d = self.admin.describe_groups([group])[group]
            assert d["error"] is None, d
            members = [
                (
                    m["client_id"],
                    m["member_metadata"]["topics"],
                    [(a["topic"], a["partitions"]) for a in m["member_assignment"]["assigned_partitions"]],
                )
                for m in d["members"]
            ]
            return d["group_state"], d["protocol_type"], d["protocol_data"], members
        (d,) = self.admin.describe_consumer_groups([group])
        assert d.error_code == 0, d
        members = [
            (
                m.client_id,
                list(m.member_metadata.topics),
                [(t, list(p)) for t, p in m.member_assignment.assignment],
            )
            for m in d.members
        ]
        return d.state, d.protocol_type, d.protocol, members

    def offsets(self, group, partitions=None):
        """{TopicPartition: (offset, metadata)}"""
        if KP_MAJOR >= 3:
            got = self.admin.list_group_offsets({group: partitions})[group]
        else:
            got = self.admin.list_consumer_group_offsets(group, partitions=partitions)
        return {tp: (om.offset, om.metadata) for tp, om in got.items()}

    def delete(self, group):
        """The error's class name, or "OK"."""
        if KP_MAJOR >= 3:
            return self.admin.delete_groups([group])[group]
        ((g, error),) = self.admin.delete_consumer_groups([group])
        assert g == group
        return "OK" if error is kafka.errors.NoError else error.__name__


def test_kafka_python_admin_groups():
    # compat/run runs this test with kafka-python 3.x and again with 2.x.
    print(f"kafka-python {kafka.__version__}")
    topic = tenant_topic(unique("admin_groups"))
    group = unique("admin-kp")
    create_topic(topic, 2)
    produce(topic, [f"v{i}" for i in range(6)], partition=lambda i: i % 2)
    admin = GroupAdmin()
    consumer = group_consumer(group, [topic])
    try:
        assert len(poll_records(consumer, 6, settle_s=0.2)) == 6
        consumer.commit(
            {
                TopicPartition(topic, 0): OffsetAndMetadata(3, "m0", -1),
                TopicPartition(topic, 1): OffsetAndMetadata(1, "", -1),
            }
        )

        assert admin.list()[group] == "consumer"
        assert admin.offsets(group) == {TopicPartition(topic, 0): (3, "m0"), TopicPartition(topic, 1): (1, "")}
        assert admin.offsets(group, [TopicPartition(topic, 1)]) == {TopicPartition(topic, 1): (1, "")}

        # Refused while the member is there (NON_EMPTY_GROUP); the group is untouched.
        assert admin.delete(group) == "NonEmptyGroupError"
        assert http("DELETE", f"/v1/groups/{group}").status_code == 409
        assert describe_group(group)["state"] == "Stable"
    finally:
        consumer.close()
    try:
        wait_group_state(group, "Empty")
        assert admin.delete(group) == "OK"
        assert group not in admin.list()
        assert admin.offsets(group) == {}
        assert http("GET", f"/v1/groups/{group}").status_code == 404
        # Deleting it again: GROUP_ID_NOT_FOUND.
        assert admin.delete(group) == "GroupIdNotFoundError"
    finally:
        admin.close()


def test_kafka_python_admin_describe_group():
    # compat/run runs this test with kafka-python 3.x and again with 2.x (whose
    # describe_consumer_groups asks DescribeGroups v3 for the authorized operations and decodes
    # the bit field it gets back).
    topic = tenant_topic(unique("admin_describe"))
    group = unique("admin-describe")
    create_topic(topic, 2)
    admin = GroupAdmin()
    consumer = group_consumer(group, [topic])
    try:
        poll_records(consumer, 0, settle_s=0)
        assert admin.describe(group) == (
            "Stable",
            "consumer",
            "range",
            [(f"compat-{group}", [topic], [(topic, [0, 1])])],
        )
        consumer.close()
        wait_group_state(group, "Empty")
        assert admin.describe(group) == ("Empty", "consumer", "", [])
    finally:
        consumer.close()
        admin.close()


def test_describe_groups_authorized_operations():
    # DescribeGroups v3+ with include_authorized_operations=true: a broker without an
    # authorizer answers every operation a group supports (READ, DESCRIBE, DELETE), as it does
    # for topics and the cluster in Metadata; i32::MIN means "not requested".
    group = unique("authorized-ops")
    topic = tenant_topic(unique("authorized_ops"))
    create_topic(topic, 1)
    consumer = group_consumer(group, [topic])
    admin = new_admin()
    rd = RdAdminClient({"bootstrap.servers": BOOTSTRAP})
    try:
        poll_records(consumer, 0, settle_s=0)
        # kafka-python 3.x always asks for them.
        kp = admin.describe_groups([group])[group]["authorized_operations"]
        plain = rd.describe_consumer_groups([group], request_timeout=15)[group].result()
        assert plain.authorized_operations is None  # not asked for
        asked = rd.describe_consumer_groups([group], include_authorized_operations=True, request_timeout=15)
        ops = asked[group].result().authorized_operations
        rdk = None if ops is None else sorted(o.name for o in ops)
        assert (sorted(kp or []), rdk) == (["DELETE", "DESCRIBE", "READ"], ["DELETE", "DESCRIBE", "READ"]), (
            f"authorized_operations of group {group}: kafka-python 3 {kp!r}, librdkafka {rdk!r}"
        )
    finally:
        consumer.close()
        admin.close()


def test_librdkafka_admin_groups():
    topic = tenant_topic(unique("admin_groups_rdk"))
    group = unique("admin-rdk")
    create_topic(topic, 2)
    produce(topic, [f"v{i}" for i in range(4)], partition=lambda i: i % 2)
    admin = RdAdminClient({"bootstrap.servers": BOOTSTRAP})
    consumer = rd_consumer(group)
    try:
        consumer.subscribe([topic])
        assert len(rd_poll(consumer, 4, settle_s=0.2)) == 4
        consumer.commit(asynchronous=False)

        listed = admin.list_consumer_groups(request_timeout=15).result()
        assert not listed.errors, listed.errors
        (g,) = [x for x in listed.valid if x.group_id == group]
        assert g.is_simple_consumer_group is False
        assert g.state.name == "STABLE", g.state

        desc = admin.describe_consumer_groups([group], request_timeout=15)[group].result()
        assert desc.state.name == "STABLE" and desc.partition_assignor == "range", desc
        (member,) = desc.members
        assigned = sorted((tp.topic, tp.partition) for tp in member.assignment.topic_partitions)
        assert assigned == [(topic, 0), (topic, 1)], assigned

        req = [ConsumerGroupTopicPartitions(group)]
        res = admin.list_consumer_group_offsets(req, request_timeout=15)[group].result()
        assert sorted((tp.topic, tp.partition, tp.offset) for tp in res.topic_partitions) == [(topic, 0, 2), (topic, 1, 2)]

        fut = admin.delete_consumer_groups([group], request_timeout=15)[group]
        with pytest.raises(KafkaException) as info:
            fut.result()
        assert info.value.args[0].name() == "NON_EMPTY_GROUP", info.value
    finally:
        consumer.close()
    wait_group_state(group, "Empty")
    admin.delete_consumer_groups([group], request_timeout=15)[group].result()
    assert http("GET", f"/v1/groups/{group}").status_code == 404


def test_librdkafka_two_members_split_and_take_over():
    topic = tenant_topic(unique("rdk_pair"))
    group = unique("rdk-pair")
    create_topic(topic, 4)
    produce(topic, [f"v{i}" for i in range(40)], partition=lambda i: i % 4)
    one, two = rd_consumer(group, **{"client.id": "one"}), rd_consumer(group, **{"client.id": "two"})
    try:
        one.subscribe([topic])
        two.subscribe([topic])

        def split():
            one.poll(0.1)
            two.poll(0.1)
            a = {tp.partition for tp in one.assignment()}
            b = {tp.partition for tp in two.assignment()}
            return (a, b) if a and b and not (a & b) and a | b == {0, 1, 2, 3} else None

        a, b = wait_for("two members splitting four partitions", split, timeout_s=30, interval_s=0)
        assert len(a) == len(b) == 2, (a, b)
        d = describe_group(group)
        assert sorted(m["client_id"] for m in d["members"]) == ["one", "two"], d
        # Commit offsets 5 on one's partitions only, then close it.
        one.commit(offsets=[RdTopicPartition(topic, p, 5) for p in a], asynchronous=False)
        one.close()
        one = None
        def two_has_all():
            two.poll(0.1)
            return {tp.partition for tp in two.assignment()} == {0, 1, 2, 3}

        wait_for("two takes every partition", two_has_all, timeout_s=20, interval_s=0)
        committed = two.committed([RdTopicPartition(topic, p) for p in range(4)], timeout=15)
        assert {tp.partition: tp.offset for tp in committed if tp.partition in a} == {p: 5 for p in a}
    finally:
        if one is not None:
            one.close()
        two.close()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "member":
        member_main(*sys.argv[2:])
    else:
        sys.exit("usage: test_groups.py member GROUP TOPIC NAME")
