"""The tenant isolation matrix over Kafka and HTTP: tenant A does every operation on its own
resources (allowed) and on tenant B's (denied), with the clients users have.

One herald (HERALD_BIN) for the module, with a SASL Kafka listener; KAFKA_SECURITY_PROTOCOL
says which (SASL_SSL: TLS on the Kafka listener and on HTTP, the development CA generated on
first start; SASL_PLAINTEXT: neither). Tenants come from `herald tenant create` (SCRAM
credentials, the default ACLs, a tenant API key). Each tenant then makes its own topic with a
record, its own group with a committed offset and its own channel with a publication, as a user
would.

On top of its default ACLs, A is granted ALL on every `smarteros.` topic and group — a
deliberately too-wide operator ACL that also lets A create, delete and alter its own topics and
delete its own groups. The "other" column must therefore be refused by the tenant fence alone.

Kafka: kafka-python 3.x (compat/run puts it first on PYTHONPATH) with SCRAM-SHA-256 and -512,
confluent-kafka (librdkafka) with SCRAM-SHA-512 and -256. HTTP: urllib with tenant API keys.
B's resources come in two kinds, an existing one and a missing one, which must be refused
alike (no existence hint). Every denial is counted in auth_failures_total and audited in
`_herald.audit.security` with A's principal and B's resource (the last test).

The WebSocket row is compat/security/isolation.test.mjs (centrifuge-js, its own server).
"""

import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import confluent_kafka
import kafka
import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)
from kafka.structs import OffsetAndMetadata

assert kafka.__version__.startswith("3."), (
    f"kafka-python {kafka.__version__}: this suite is for 3.x (compat/run puts it on PYTHONPATH)")

HERALD_BIN = os.environ["HERALD_BIN"]

# ---------------------------------------------------------------------------------------------
# The listener. Switching protocols is this one line; everything below follows LISTENERS.

KAFKA_SECURITY_PROTOCOL = os.environ.get("HERALD_SECURITY_KAFKA_PROTOCOL", "SASL_SSL")

LISTENERS = {
    "SASL_PLAINTEXT": {
        "serve": ["--kafka-addr", "SASL_PLAINTEXT://127.0.0.1:0"],
        "unauthenticated": "PLAINTEXT",  # the same transport without SASL
        "kafka_python": lambda ca: {},
        "confluent": lambda ca: {},
    },
    "SASL_SSL": {
        "serve": ["--kafka-addr", "SASL_SSL://127.0.0.1:0", "--http-tls"],
        "unauthenticated": "SSL",
        "kafka_python": lambda ca: {"ssl_cafile": ca},
        "confluent": lambda ca: {"ssl.ca.location": ca},
    },
}
LISTENER = LISTENERS[KAFKA_SECURITY_PROTOCOL]

ADMIN_KEY = "compat-isolation-admin-key-0123456789"
JWT_SECRET = "compat-isolation-jwt-secret-0123456789abcdef0123456789"
RUN = uuid.uuid4().hex[:8]
A, B = f"matrixa-{RUN}", f"matrixb-{RUN}"
PRINCIPAL = {t: f"User:tenant-{t}" for t in (A, B)}
TOPIC = {t: f"smarteros.{t}.shopify.order_created" for t in (A, B)}
MISSING_TOPIC = {t: f"smarteros.{t}.nothing.here" for t in (A, B)}  # never created
GROUP = {t: f"smarteros.{t}.audit-logger" for t in (A, B)}  # has a committed offset
MISSING_GROUP = {t: f"smarteros.{t}.nobody" for t in (A, B)}  # never used
CHANNEL = {t: f"tenant:{t}:orders" for t in (A, B)}
KAFKA_TIMEOUT_MS = 15000

# The matrix's columns: A's own resource, B's existing one, B's missing one.
OWN, OTHER, OTHER_MISSING = "own", "other", "other-missing"
TOPIC_OF = {OWN: TOPIC[A], OTHER: TOPIC[B], OTHER_MISSING: MISSING_TOPIC[B]}
GROUP_OF = {OWN: GROUP[A], OTHER: GROUP[B], OTHER_MISSING: MISSING_GROUP[B]}
WHOSE = [OWN, OTHER, OTHER_MISSING]
OWN_OR_OTHER = [OWN, OTHER]


class Herald:
    """The server, started the one way this suite starts it (see LISTENERS)."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [HERALD_BIN, "serve", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0",
             *LISTENER["serve"]],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "HERALD_ADMIN_API_KEY": ADMIN_KEY, "HERALD_JWT_SECRET": JWT_SECRET,
                 "HERALD_SUPERUSERS": "User:ops",
                 "HERALD_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "HERALD_LOG": "warn"},
        )
        self.kafka = self.http = None
        deadline = time.time() + 30
        while self.http is None:  # the HTTP API line comes last
            assert time.time() < deadline, "herald did not start"
            line = self.proc.stdout.readline()
            assert line, "herald exited"
            if m := re.search(r"Kafka %s\s+(\S+)" % KAFKA_SECURITY_PROTOCOL, line):
                self.kafka = m.group(1)
            if m := re.search(r"HTTP API\s+(https?://\S+)", line):
                self.http = m.group(1)
        assert self.kafka, f"no {KAFKA_SECURITY_PROTOCOL} listener in the banner"
        self.ca = os.path.join(data_dir, "tls", "ca.pem")
        self.ssl = ssl.create_default_context(cafile=self.ca) if self.http.startswith("https") else None

    def cli(self, *args, stdin=None):
        out = subprocess.run(
            [HERALD_BIN, *args], input=stdin, capture_output=True, text=True, timeout=30,
            env={**os.environ, "HERALD_SERVER": self.http, "HERALD_API_KEY": ADMIN_KEY,
                 **({"HERALD_CA_CERT": self.ca} if self.ssl else {})},
        )
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    def request(self, method, path, key=None, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.http + path, data=data, method=method)
        if key:
            req.add_header("X-API-Key", key)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=15, context=self.ssl) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def metrics(self):
        with urllib.request.urlopen(self.http + "/metrics", timeout=10, context=self.ssl) as r:
            return r.read().decode()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# Client settings: the protocol's extras come from LISTENER.


def kp_conf(h, user, password, mechanism="SCRAM-SHA-256"):
    return dict(
        bootstrap_servers=h.kafka, security_protocol=KAFKA_SECURITY_PROTOCOL,
        sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password,
        request_timeout_ms=KAFKA_TIMEOUT_MS, **LISTENER["kafka_python"](h.ca),
    )


def ck_conf(h, user, password, mechanism="SCRAM-SHA-512", **extra):
    return {
        "bootstrap.servers": h.kafka, "security.protocol": KAFKA_SECURITY_PROTOCOL,
        "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
        **LISTENER["confluent"](h.ca), **extra,
    }


def kp(h, tenant=A, mechanism="SCRAM-SHA-256"):
    """kafka-python settings of a tenant's user."""
    return kp_conf(h, f"tenant-{tenant}", h.passwords[tenant], mechanism)


def ck(h, tenant=A, mechanism="SCRAM-SHA-512", **extra):
    """confluent-kafka settings of a tenant's user."""
    return ck_conf(h, f"tenant-{tenant}", h.passwords[tenant], mechanism, **extra)


def envelope(tenant):
    return {
        "event_id": str(uuid.uuid4()), "event_type": "order_created", "tenant_id": tenant,
        "service": "shopify", "timestamp": "2026-11-24T10:00:00Z", "data": {"order_id": 1},
    }


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def h():
    d = tempfile.mkdtemp(prefix="herald-isolation-")
    server = Herald(d)
    try:
        # A's password is generated and shown once; B's comes from stdin.
        created = {
            A: json.loads(server.cli("tenant", "create", A, "--json")),
            B: json.loads(server.cli("tenant", "create", B, "--password-stdin", "--json",
                                     stdin="tenant-b-password-1\n")),
        }
        for t, c in created.items():
            assert c["tenant"] == t and c["principal"] == PRINCIPAL[t], c
            assert c["api_key"].startswith("hk_") and c["api_key_id"], c
            acls = {(a["resource_type"], a["name"], a["pattern"], a["operation"], a["permission"])
                    for a in c["acls"] if a["principal"] == PRINCIPAL[t]}
            for rt, ops in (("TOPIC", ("READ", "WRITE", "DESCRIBE")), ("GROUP", ("READ", "DESCRIBE"))):
                for op in ops:
                    assert (rt, f"smarteros.{t}.", "PREFIXED", op, "ALLOW") in acls, (rt, op, acls)
        assert created[A]["password"] and len(created[A]["password"]) >= 16
        assert created[B]["password"] is None
        server.passwords = {A: created[A]["password"], B: "tenant-b-password-1"}
        server.keys = {t: created[t]["api_key"] for t in (A, B)}
        server.key_ids = {t: created[t]["api_key_id"] for t in (A, B)}
        # The deliberately too-wide ACL (see the module docstring).
        server.cli("acl", "create", "--principal", PRINCIPAL[A], "--operation", "ALL",
                   "--topic", "smarteros.", "--prefixed")
        server.cli("acl", "create", "--principal", PRINCIPAL[A], "--operation", "ALL",
                   "--group", "smarteros.", "--prefixed")
        # Each tenant's topic with a record, group with a committed offset, channel with a
        # publication — made by the tenant itself.
        for t in (A, B):
            p = KafkaProducer(value_serializer=lambda v: json.dumps(v).encode(), **kp(server, t))
            p.send(TOPIC[t], envelope(t)).get(timeout=15)
            p.close()
            c = KafkaConsumer(group_id=GROUP[t], enable_auto_commit=False, **kp(server, t))
            c.commit({TopicPartition(TOPIC[t], 0): OffsetAndMetadata(1, "", -1)})
            c.close()
            status, body = server.request("POST", "/api/events/publish", server.keys[t],
                                          {"channel": CHANNEL[t], "event": {"type": "order", "data": {"from": t}}})
            assert status == 200, body
        yield server
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


def b_is_intact(h):
    """B's topic still has its record and B's group its committed offset (seen by the admin)."""
    status, body = h.request("GET", f"/v1/topics/{TOPIC[B]}/events?offset=0", ADMIN_KEY)
    assert status == 200, body
    assert [e["value"]["tenant_id"] for e in body["events"]][:1] == [B], body
    status, body = h.request("GET", f"/v1/groups/{GROUP[B]}", ADMIN_KEY)
    assert status == 200, body
    assert [(o["topic"], o["committed"]) for o in body["offsets"]] == [(TOPIC[B], 1)], body


def failures(h, interface, reason):
    """auth_failures_total{interface, reason} as /metrics shows it now."""
    m = re.search(r'^auth_failures_total\{interface="%s",reason="%s"\} (\d+)$' % (interface, reason),
                  h.metrics(), re.M)
    return int(m.group(1)) if m else 0


# =============================================================================================
# Kafka: kafka-python 3.x


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_python_metadata_lists_only_own_topics(h, mechanism):
    c = KafkaConsumer(**kp(h, A, mechanism))
    try:
        topics = c.topics()
    finally:
        c.close()
    assert TOPIC[A] in topics
    assert all(t.startswith(f"smarteros.{A}.") for t in topics), topics


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("whose", WHOSE)
def test_kafka_python_produce(h, whose, mechanism):
    p = KafkaProducer(value_serializer=lambda v: json.dumps(v).encode(), max_block_ms=8000,
                      **kp(h, A, mechanism))
    try:
        fut = p.send(TOPIC_OF[whose], envelope(A))
        if whose == OWN:
            assert fut.get(timeout=15).offset >= 1
        else:
            with pytest.raises(TopicAuthorizationFailedError):
                fut.get(timeout=15)
    finally:
        p.close(timeout=5)


@pytest.mark.parametrize("whose", WHOSE)
def test_kafka_python_fetch_and_list_offsets(h, whose):
    c = KafkaConsumer(value_deserializer=json.loads, auto_offset_reset="earliest",
                      consumer_timeout_ms=3000, **kp(h, A))
    tp = TopicPartition(TOPIC_OF[whose], 0)
    try:
        if whose == OWN:
            assert c.beginning_offsets([tp])[tp] == 0
            assert c.end_offsets([tp])[tp] >= 1
            c.assign([tp])
            first = next(iter(c))
            assert first.value["tenant_id"] == A
        else:
            with pytest.raises(TopicAuthorizationFailedError):
                c.beginning_offsets([tp])
            with pytest.raises(TopicAuthorizationFailedError):
                c.end_offsets([tp])
            c.assign([tp])
            assert c.poll(timeout_ms=1500) == {}
    finally:
        c.close()


@pytest.mark.parametrize("whose", WHOSE)
def test_kafka_python_describe_configs(h, whose):
    from kafka.admin import ConfigResource as KPConfigResource
    admin = KafkaAdminClient(**kp(h, A))
    try:
        configs = admin.describe_configs([KPConfigResource("TOPIC", TOPIC_OF[whose])],
                                         config_filter="all")["topic"][TOPIC_OF[whose]]
    finally:
        admin.close()
    if whose == OWN:
        assert configs["retention.ms"]["value"] == "604800000", configs
    else:
        # kafka-python 3 drops DescribeConfigs' per-resource error code; what matters here is
        # that nothing of B's is disclosed (librdkafka's row below checks the error code).
        assert configs == {}


@pytest.mark.parametrize("whose", WHOSE)
def test_kafka_python_alter_configs(h, whose):
    from kafka.admin import ConfigResource as KPConfigResource
    admin = KafkaAdminClient(**kp(h, A))
    try:
        result = admin.alter_configs(
            [KPConfigResource("TOPIC", TOPIC_OF[whose], configs={"retention.ms": "86400000"})],
            raise_on_unknown=False)
        outcome = result["topic"][TOPIC_OF[whose]]
    finally:
        admin.close()
    if whose == OWN:
        assert outcome == "OK", outcome
        status, body = h.request("GET", f"/v1/topics/{TOPIC[A]}", h.keys[A])
        assert status == 200 and str(body["config"]["retention.ms"]) == "86400000", body
    else:
        # kafka-python 3 reports a resource's error as the error's text.
        assert outcome.startswith("[Error 29] TopicAuthorizationFailedError"), outcome


@pytest.mark.parametrize("whose", OWN_OR_OTHER)
def test_kafka_python_create_and_delete_topic(h, whose):
    from kafka.admin import NewTopic as KPNewTopic
    tenant = A if whose == OWN else B
    name = f"smarteros.{tenant}.matrix.{unique('created')}"
    admin = KafkaAdminClient(**kp(h, A))
    try:
        if whose == OWN:
            admin.create_topics([KPNewTopic(name, 1, 1)])
            assert h.request("GET", f"/v1/topics/{name}", h.keys[A])[0] == 200
            admin.delete_topics([name])
            assert h.request("GET", f"/v1/topics/{name}", h.keys[A])[0] == 404
        else:
            with pytest.raises(TopicAuthorizationFailedError):
                admin.create_topics([KPNewTopic(name, 1, 1)])
            assert h.request("GET", f"/v1/topics/{name}", ADMIN_KEY)[0] == 404
            for victim in (TOPIC[B], MISSING_TOPIC[B]):
                with pytest.raises(TopicAuthorizationFailedError):
                    admin.delete_topics([victim])
            b_is_intact(h)
    finally:
        admin.close()


@pytest.mark.parametrize("whose", WHOSE)
def test_kafka_python_join_group(h, whose):
    # A subscribes to its own topic, in a group of its own or in B's.
    group = unique(f"smarteros.{A}.join") if whose == OWN else GROUP_OF[whose]
    c = KafkaConsumer(TOPIC[A], group_id=group, auto_offset_reset="earliest",
                      enable_auto_commit=False, **kp(h, A))
    try:
        if whose == OWN:
            deadline = time.time() + 15
            while not c.assignment() and time.time() < deadline:
                c.poll(timeout_ms=200)
            assert c.assignment() == {TopicPartition(TOPIC[A], 0)}
        else:
            with pytest.raises(GroupAuthorizationFailedError):
                for _ in range(10):
                    c.poll(timeout_ms=300)
    finally:
        c.close()


@pytest.mark.parametrize("whose", WHOSE)
def test_kafka_python_commit_and_fetch_offsets(h, whose):
    c = KafkaConsumer(group_id=GROUP_OF[whose], enable_auto_commit=False, **kp(h, A))
    tp = TopicPartition(TOPIC[A], 0)
    try:
        if whose == OWN:
            c.commit({tp: OffsetAndMetadata(1, "", -1)})
            assert c.committed(tp) == 1
        else:
            with pytest.raises(GroupAuthorizationFailedError):
                c.commit({tp: OffsetAndMetadata(1, "", -1)})
            with pytest.raises(GroupAuthorizationFailedError):
                c.committed(TopicPartition(TOPIC[B], 0))
    finally:
        c.close()


def test_kafka_python_own_group_cannot_commit_the_other_tenants_topic(h):
    c = KafkaConsumer(group_id=GROUP[A], enable_auto_commit=False, **kp(h, A))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            c.commit({TopicPartition(TOPIC[B], 0): OffsetAndMetadata(1, "", -1)})
    finally:
        c.close()


@pytest.mark.parametrize("whose", WHOSE)
def test_kafka_python_describe_group_and_list_its_offsets(h, whose):
    admin = KafkaAdminClient(**kp(h, A))
    try:
        if whose == OWN:
            described = admin.describe_groups([GROUP[A]])[GROUP[A]]
            assert described["error"] is None and described["group_state"] == "Empty", described
            offsets = admin.list_group_offsets({GROUP[A]: None})[GROUP[A]]
            assert offsets[TopicPartition(TOPIC[A], 0)].offset == 1, offsets
        else:
            with pytest.raises(GroupAuthorizationFailedError):
                admin.describe_groups([GROUP_OF[whose]])
            with pytest.raises(GroupAuthorizationFailedError):
                admin.list_group_offsets({GROUP_OF[whose]: None})
    finally:
        admin.close()


def test_kafka_python_list_groups_shows_only_own(h):
    admin = KafkaAdminClient(**kp(h, A))
    try:
        groups = [g["group_id"] if isinstance(g, dict) else g[0] for g in admin.list_groups()]
    finally:
        admin.close()
    assert GROUP[A] in groups
    assert all(g.startswith(f"smarteros.{A}.") for g in groups), groups


@pytest.mark.parametrize("whose", WHOSE)
def test_kafka_python_delete_group(h, whose):
    admin = KafkaAdminClient(**kp(h, A))
    try:
        if whose == OWN:
            group = unique(f"smarteros.{A}.doomed")
            c = KafkaConsumer(group_id=group, enable_auto_commit=False, **kp(h, A))
            c.commit({TopicPartition(TOPIC[A], 0): OffsetAndMetadata(1, "", -1)})
            c.close()
            assert admin.delete_groups([group]) == {group: "OK"}
            assert group not in [g["group_id"] for g in admin.list_groups()]
        else:
            with pytest.raises(GroupAuthorizationFailedError):
                admin.delete_groups([GROUP_OF[whose]])
            b_is_intact(h)
    finally:
        admin.close()


def _kp_acl_filter():
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             ResourcePatternFilter)
    from kafka.admin import ResourceType as KPResourceType
    return ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                     permission_type=ACLPermissionType.ANY,
                     resource_pattern=ResourcePatternFilter(KPResourceType.ANY, None,
                                                            ACLResourcePatternType.ANY))


def _kp_acl_opening_b_to_a():
    from kafka.admin import (ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             ResourcePattern)
    from kafka.admin import ResourceType as KPResourceType
    return ACL(principal=PRINCIPAL[A], host="*", operation=ACLOperation.ALL,
               permission_type=ACLPermissionType.ALLOW,
               resource_pattern=ResourcePattern(KPResourceType.TOPIC, TOPIC[B],
                                                ACLResourcePatternType.LITERAL))


def _kp_describe_acls(admin):
    admin.describe_acls(_kp_acl_filter())


def _kp_create_acls(admin):
    result = admin.create_acls([_kp_acl_opening_b_to_a()])
    assert not result["succeeded"], result
    raise result["failed"][0]() if isinstance(result["failed"][0], type) else result["failed"][0]


def _kp_delete_acls(admin):
    [(_, deleted, error)] = admin.delete_acls([_kp_acl_filter()])
    assert deleted == [], deleted
    raise error() if isinstance(error, type) else error


def _kp_describe_scram(admin):
    admin.describe_user_scram_credentials()


def _kp_alter_scram(admin):
    from kafka.admin import ScramMechanism as KPScramMechanism
    from kafka.admin import UserScramCredentialUpsertion as KPUpsertion
    result = admin.alter_user_scram_credentials([KPUpsertion(
        f"tenant-{B}", KPScramMechanism.SCRAM_SHA_256, b"taken-over-password", iterations=4096)])
    # kafka-python 3 reports per-user errors as their message.
    assert result == {f"tenant-{B}": "Authorization failed."}, result
    raise ClusterAuthorizationFailedError(result)


@pytest.mark.parametrize("operation", [_kp_describe_acls, _kp_create_acls, _kp_delete_acls,
                                       _kp_describe_scram, _kp_alter_scram],
                         ids=["describe_acls", "create_acls", "delete_acls",
                              "describe_user_scram_credentials", "alter_user_scram_credentials"])
def test_kafka_python_security_administration_is_refused(h, operation):
    # The allowed column of these rows is the superuser's, in the last Kafka test.
    admin = KafkaAdminClient(**kp(h, A))
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            operation(admin)
    finally:
        admin.close()
    # B's password was not changed, and no ACL opened B's topic to A.
    c = KafkaConsumer(**kp(h, B))
    assert TOPIC[B] in c.topics()
    c.close()
    assert PRINCIPAL[A] not in h.cli("acl", "list", "--topic", TOPIC[B])


def _kp_wrong_password(h):
    return kp_conf(h, f"tenant-{A}", "not-the-password-at-all")


def _kp_the_other_tenants_password(h):
    return kp_conf(h, f"tenant-{A}", h.passwords[B])


def _kp_unauthenticated(h):
    return dict(bootstrap_servers=h.kafka, security_protocol=LISTENER["unauthenticated"],
                request_timeout_ms=5000, **LISTENER["kafka_python"](h.ca))


@pytest.mark.parametrize("conf,reason", [(_kp_wrong_password, "bad_credentials"),
                                         (_kp_the_other_tenants_password, "bad_credentials"),
                                         (_kp_unauthenticated, "unauthenticated")],
                         ids=["wrong-password", "the-other-tenants-password", "unauthenticated"])
def test_kafka_python_refused_without_the_right_credentials(h, conf, reason):
    before = failures(h, "kafka", reason)
    got = None
    try:
        p = KafkaProducer(max_block_ms=3000, bootstrap_timeout_ms=2000, **conf(h))
        try:
            got = p.send(TOPIC[A], json.dumps(envelope(A)).encode()).get(timeout=8)
        finally:
            p.close(timeout=2)
    except kafka.errors.KafkaError as e:
        got = e
    # kafka-python 3 often reports the broker closing the connection after the refusal (as
    # Kafka does) rather than the SaslAuthenticate error itself; the counter says why.
    assert isinstance(got, kafka.errors.KafkaError), f"produced without valid credentials: {got}"
    assert failures(h, "kafka", reason) > before


# =============================================================================================
# Kafka: the broker itself. The clients above stop at Metadata or FindCoordinator, which refuse
# first, so the broker never sees their Produce, Fetch or OffsetCommit for B. Here those
# requests go straight to the broker over A's authenticated kafka-python 3 connection (its
# protocol classes, sent with KafkaAdminClient's connection manager, a private interface).

TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED = 29, 30


def _raw_send(admin, request):
    node = next(iter(admin._manager.cluster.brokers())).node_id

    async def send():
        return await admin._manager.send(request, node_id=node)
    return admin._manager.run(send)


def _raw_produce(admin, topic):
    from kafka.protocol.producer import ProduceRequest
    from kafka.record import MemoryRecordsBuilder
    records = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    records.append(int(time.time() * 1000), None, json.dumps(envelope(A)).encode(), [])
    records.close()
    data = ProduceRequest.TopicProduceData
    r = _raw_send(admin, ProduceRequest(
        max_version=12, transactional_id=None, acks=-1, timeout_ms=5000,
        topic_data=[data(name=topic, partition_data=[
            data.PartitionProduceData(index=0, records=records.buffer())])]))
    return r.responses[0].partition_responses[0].error_code


def _raw_fetch(admin, topic):
    from kafka.protocol.consumer import FetchRequest
    t = FetchRequest.FetchTopic
    r = _raw_send(admin, FetchRequest(
        max_version=12, replica_id=-1, max_wait_ms=0, min_bytes=0, max_bytes=1 << 20,
        isolation_level=0, session_id=0, session_epoch=-1, forgotten_topics_data=[], rack_id="",
        topics=[t(topic=topic, partitions=[
            t.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)])]))
    [partition] = r.responses[0].partitions
    assert partition.error_code or partition.records, "an allowed Fetch returned no record"
    return r.error_code or partition.error_code


def _raw_list_offsets(admin, topic):
    from kafka.protocol.consumer import ListOffsetsRequest
    t = ListOffsetsRequest.ListOffsetsTopic
    r = _raw_send(admin, ListOffsetsRequest(
        replica_id=-1, isolation_level=0,
        topics=[t(name=topic, partitions=[t.ListOffsetsPartition(partition_index=0, timestamp=-1)])]))
    return r.topics[0].partitions[0].error_code


RAW_TOPIC_REQUESTS = {"Produce": _raw_produce, "Fetch": _raw_fetch, "ListOffsets": _raw_list_offsets}


@pytest.mark.parametrize("request_", list(RAW_TOPIC_REQUESTS))
@pytest.mark.parametrize("whose", WHOSE)
def test_the_broker_refuses_topic_requests(h, whose, request_):
    admin = KafkaAdminClient(**kp(h, A))
    try:
        code = RAW_TOPIC_REQUESTS[request_](admin, TOPIC_OF[whose])
    finally:
        admin.close()
    assert code == (0 if whose == OWN else TOPIC_AUTHORIZATION_FAILED), code
    if whose != OWN and request_ == "Produce":
        b_is_intact(h)


def _raw_offset_commit(admin, group):
    from kafka.protocol.consumer import OffsetCommitRequest
    t = OffsetCommitRequest.OffsetCommitRequestTopic
    r = _raw_send(admin, OffsetCommitRequest(
        max_version=8, group_id=group, generation_id_or_member_epoch=-1, member_id="",
        group_instance_id=None, topics=[t(name=TOPIC[A], partitions=[t.OffsetCommitRequestPartition(
            partition_index=0, committed_offset=1, committed_metadata="")])]))
    return r.topics[0].partitions[0].error_code


def _raw_offset_fetch(admin, group):
    from kafka.protocol.consumer import OffsetFetchRequest
    r = _raw_send(admin, OffsetFetchRequest(max_version=7, group_id=group, topics=None,
                                            require_stable=False))
    return r.error_code


def _raw_join_group(admin, group):
    from kafka.protocol.consumer import JoinGroupRequest
    r = _raw_send(admin, JoinGroupRequest(
        max_version=7, group_id=group, session_timeout_ms=6000, rebalance_timeout_ms=6000,
        member_id="", group_instance_id=None, protocol_type="consumer",
        protocols=[JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")]))
    # A first join without a member id is sent back for one (KIP-394): the broker let A in.
    return 0 if r.error_code == 79 else r.error_code


def _raw_describe_group(admin, group):
    from kafka.protocol.admin import DescribeGroupsRequest
    r = _raw_send(admin, DescribeGroupsRequest(groups=[group], include_authorized_operations=False))
    return r.groups[0].error_code


def _raw_delete_group(admin, group):
    from kafka.protocol.admin import DeleteGroupsRequest
    r = _raw_send(admin, DeleteGroupsRequest(groups_names=[group]))
    return r.results[0].error_code


RAW_GROUP_REQUESTS = {"OffsetCommit": _raw_offset_commit, "OffsetFetch": _raw_offset_fetch,
                      "JoinGroup": _raw_join_group, "DescribeGroups": _raw_describe_group,
                      "DeleteGroups": _raw_delete_group}


@pytest.mark.parametrize("request_", list(RAW_GROUP_REQUESTS))
@pytest.mark.parametrize("whose", WHOSE)
def test_the_broker_refuses_group_requests(h, whose, request_):
    admin = KafkaAdminClient(**kp(h, A))
    try:
        if whose == OWN:
            group = unique(f"smarteros.{A}.raw")
            assert _raw_offset_commit(admin, group) == 0  # so that it exists
            code = RAW_GROUP_REQUESTS[request_](admin, group)
        else:
            code = RAW_GROUP_REQUESTS[request_](admin, GROUP_OF[whose])
    finally:
        admin.close()
    assert code == (0 if whose == OWN else GROUP_AUTHORIZATION_FAILED), code
    if whose != OWN:
        b_is_intact(h)



# =============================================================================================
# Kafka: confluent-kafka (librdkafka)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
def test_confluent_metadata_lists_only_own_topics(h, mechanism):
    admin = AdminClient(ck(h, A, mechanism))
    topics = admin.list_topics(timeout=10).topics
    assert TOPIC[A] in topics
    assert all(t.startswith(f"smarteros.{A}.") for t in topics), sorted(topics)


@pytest.mark.parametrize("whose", WHOSE)
def test_confluent_metadata_by_name(h, whose):
    admin = AdminClient(ck(h, A))
    topic = admin.list_topics(topic=TOPIC_OF[whose], timeout=10).topics[TOPIC_OF[whose]]
    if whose == OWN:
        assert topic.error is None and len(topic.partitions) == 1
    else:
        # The same answer for an existing and a missing topic of B's: no existence hint.
        assert topic.error is not None
        assert topic.error.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
        # Nor was the missing topic created by asking.
        assert h.request("GET", f"/v1/topics/{MISSING_TOPIC[B]}", ADMIN_KEY)[0] == 404


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
@pytest.mark.parametrize("whose", WHOSE)
def test_confluent_produce(h, whose, mechanism):
    reports = []
    p = confluent_kafka.Producer(ck(h, A, mechanism, **{"message.timeout.ms": 8000}))
    p.produce(TOPIC_OF[whose], json.dumps(envelope(A)),
              on_delivery=lambda err, msg: reports.append(err))
    p.flush(15)
    assert len(reports) == 1
    if whose == OWN:
        assert reports[0] is None
    else:
        assert reports[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.mark.parametrize("whose", WHOSE)
def test_confluent_consume(h, whose):
    c = confluent_kafka.Consumer(ck(h, A, **{
        "group.id": unique(f"smarteros.{A}.consume"), "enable.auto.commit": False,
        "auto.offset.reset": "earliest"}))
    c.subscribe([TOPIC_OF[whose]])
    got, error = None, None
    deadline = time.time() + 15
    try:
        while got is None and error is None and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                error = m.error().code()
            else:
                got = json.loads(m.value())
    finally:
        c.close()
    if whose == OWN:
        assert error is None and got is not None and got["tenant_id"] == A
    else:
        assert got is None
        assert error == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_confluent_list_offsets(h):
    c = confluent_kafka.Consumer(ck(h, A, **{"group.id": GROUP[A]}))
    try:
        low, high = c.get_watermark_offsets(confluent_kafka.TopicPartition(TOPIC[A], 0), timeout=10)
        assert low == 0 and high >= 1
        # librdkafka learns from Metadata (TOPIC_AUTHORIZATION_FAILED) that the partition is not
        # for it and answers locally (librdkafka issue #3522); an existing and a missing topic
        # of B's must look the same.
        codes = []
        for topic in (TOPIC[B], MISSING_TOPIC[B]):
            with pytest.raises(confluent_kafka.KafkaException) as e:
                c.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=10)
            codes.append(e.value.args[0].code())
    finally:
        c.close()
    assert codes[0] == codes[1], codes
    assert codes[0] in (confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                        confluent_kafka.KafkaError._UNKNOWN_PARTITION), codes


@pytest.mark.parametrize("whose", WHOSE)
def test_confluent_describe_configs(h, whose):
    admin = AdminClient(ck(h, A))
    [fut] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, TOPIC_OF[whose])]).values()
    if whose == OWN:
        assert "retention.ms" in fut.result(timeout=10)
    else:
        with pytest.raises(confluent_kafka.KafkaException) as e:
            fut.result(timeout=10)
        assert e.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.mark.parametrize("whose", OWN_OR_OTHER)
def test_confluent_create_and_delete_topic(h, whose):
    tenant = A if whose == OWN else B
    name = f"smarteros.{tenant}.matrix.{unique('created')}"
    admin = AdminClient(ck(h, A))
    [created] = admin.create_topics([NewTopic(name, 1, 1)]).values()
    if whose == OWN:
        created.result(timeout=10)
        [deleted] = admin.delete_topics([name]).values()
        deleted.result(timeout=10)
        assert h.request("GET", f"/v1/topics/{name}", h.keys[A])[0] == 404
    else:
        with pytest.raises(confluent_kafka.KafkaException) as e:
            created.result(timeout=10)
        assert e.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
        assert h.request("GET", f"/v1/topics/{name}", ADMIN_KEY)[0] == 404
        for victim, fut in admin.delete_topics([TOPIC[B], MISSING_TOPIC[B]]).items():
            with pytest.raises(confluent_kafka.KafkaException) as e:
                fut.result(timeout=10)
            assert e.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED, victim
        b_is_intact(h)


@pytest.mark.parametrize("whose", WHOSE)
def test_confluent_join_group_and_commit(h, whose):
    group = unique(f"smarteros.{A}.join") if whose == OWN else GROUP_OF[whose]
    c = confluent_kafka.Consumer(ck(h, A, **{
        "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    try:
        c.subscribe([TOPIC[A]])
        got, error = None, None
        deadline = time.time() + 15
        while got is None and error is None and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None:
                error, got = (m.error().code(), None) if m.error() else (None, m)
        if whose == OWN:
            assert error is None and got is not None
            committed = c.commit(message=got, asynchronous=False)
            assert committed[0].offset == got.offset() + 1 and committed[0].error is None
        else:
            # Refused at FindCoordinator. (A commit would then wait for a coordinator that
            # librdkafka can never get: kafka-python's row checks OffsetCommit's refusal.)
            assert error == confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED, error
            assert got is None
    finally:
        c.close()


@pytest.mark.parametrize("whose", WHOSE)
def test_confluent_describe_group_and_list_its_offsets(h, whose):
    from confluent_kafka import ConsumerGroupTopicPartitions
    admin = AdminClient(ck(h, A))
    group = GROUP_OF[whose]
    [described] = admin.describe_consumer_groups([group]).values()
    [listed] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    if whose == OWN:
        assert described.result(timeout=10).group_id == group
        offsets = listed.result(timeout=10).topic_partitions
        assert [(tp.topic, tp.offset) for tp in offsets] == [(TOPIC[A], 1)], offsets
    else:
        for fut in (described, listed):
            with pytest.raises(confluent_kafka.KafkaException) as e:
                fut.result(timeout=10)
            assert e.value.args[0].code() == confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED


def test_confluent_list_groups_shows_only_own(h):
    admin = AdminClient(ck(h, A))
    listed = admin.list_consumer_groups().result(timeout=10)
    groups = [g.group_id for g in listed.valid]
    assert GROUP[A] in groups
    assert all(g.startswith(f"smarteros.{A}.") for g in groups), groups


@pytest.mark.parametrize("whose", WHOSE)
def test_confluent_delete_group(h, whose):
    admin = AdminClient(ck(h, A))
    if whose == OWN:
        group = unique(f"smarteros.{A}.doomed")
        c = confluent_kafka.Consumer(ck(h, A, **{"group.id": group}))
        c.commit(offsets=[confluent_kafka.TopicPartition(TOPIC[A], 0, 1)], asynchronous=False)
        c.close()
        [fut] = admin.delete_consumer_groups([group]).values()
        fut.result(timeout=10)
    else:
        [fut] = admin.delete_consumer_groups([GROUP_OF[whose]]).values()
        with pytest.raises(confluent_kafka.KafkaException) as e:
            fut.result(timeout=10)
        assert e.value.args[0].code() == confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED
        b_is_intact(h)


def test_confluent_security_administration_is_refused(h):
    admin = AdminClient(ck(h, A))
    # CreateAcls: A tries to open B's topic to itself.
    [fut] = admin.create_acls([AclBinding(
        ResourceType.TOPIC, TOPIC[B], ResourcePatternType.LITERAL, PRINCIPAL[A], "*",
        AclOperation.ALL, AclPermissionType.ALLOW)]).values()
    with pytest.raises(confluent_kafka.KafkaException) as e:
        fut.result(timeout=10)
    assert e.value.args[0].code() == confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # DescribeAcls: the broker answers CLUSTER_AUTHORIZATION_FAILED, but librdkafka drops a
    # DescribeAcls response's error code (rd_kafka_DescribeAclsResponse_parse) and reports an
    # empty list; kafka-python's row checks the code. No binding may be disclosed.
    listed = admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(timeout=10)
    assert listed == [], listed
    # AlterUserScramCredentials: A tries to set B's password. (DescribeUserScramCredentials is
    # not called with librdkafka: its error path frees a stack string and aborts the process.)
    [fut] = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        f"tenant-{B}", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
        b"taken-over-password", b"salt")]).values()
    with pytest.raises(confluent_kafka.KafkaException) as e:
        fut.result(timeout=10)
    assert e.value.args[0].code() == confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # B still authenticates with its own password.
    reports = []
    p = confluent_kafka.Producer(ck(h, B, "SCRAM-SHA-256", **{"message.timeout.ms": 8000}))
    p.produce(TOPIC[B], json.dumps(envelope(B)), on_delivery=lambda err, msg: reports.append(err))
    p.flush(15)
    assert reports == [None]


@pytest.mark.parametrize("password", ["not-the-password-at-all", "B's"],
                         ids=["wrong-password", "the-other-tenants-password"])
def test_confluent_refused_without_the_right_credentials(h, password):
    before = failures(h, "kafka", "bad_credentials")
    errors, reports = [], []
    p = confluent_kafka.Producer(ck_conf(
        h, f"tenant-{A}", h.passwords[B] if password == "B's" else password, "SCRAM-SHA-512",
        **{"message.timeout.ms": 2000, "log_level": 0,
           "error_cb": lambda e: errors.append(e.code())}))
    p.produce(TOPIC[A], json.dumps(envelope(A)), on_delivery=lambda err, msg: reports.append(err))
    p.flush(4)
    assert confluent_kafka.KafkaError._AUTHENTICATION in errors, errors
    assert len(reports) == 1 and reports[0] is not None
    assert failures(h, "kafka", "bad_credentials") > before


def test_confluent_refused_without_authentication(h):
    before = failures(h, "kafka", "unauthenticated")
    reports = []
    p = confluent_kafka.Producer({
        "bootstrap.servers": h.kafka, "security.protocol": LISTENER["unauthenticated"],
        "message.timeout.ms": 2000, "log_level": 0, **LISTENER["confluent"](h.ca)})
    p.produce(TOPIC[A], json.dumps(envelope(A)), on_delivery=lambda err, msg: reports.append(err))
    p.flush(4)
    assert len(reports) == 1 and reports[0] is not None, "an unauthenticated client produced"
    assert failures(h, "kafka", "unauthenticated") > before


# =============================================================================================
# Kafka: the allowed column of the security administration rows — a superuser — and an ACL
# that opens exactly the topic it names.


def test_a_superuser_manages_acls_and_an_acl_opens_exactly_what_it_names(h):
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePattern, ResourcePatternFilter)
    from kafka.admin import ResourceType as KPResourceType
    h.cli("user", "create", "ops", "--password-stdin", stdin="ops-password-123\n")
    ops = kp_conf(h, "ops", "ops-password-123", "SCRAM-SHA-512")
    admin = KafkaAdminClient(**ops)
    try:
        # A superuser reads any tenant's topic and describes SCRAM users.
        c = KafkaConsumer(**ops, auto_offset_reset="earliest", consumer_timeout_ms=8000)
        c.assign([TopicPartition(TOPIC[B], 0)])
        assert json.loads(next(iter(c)).value)["tenant_id"] == B
        c.close()
        users = admin.describe_user_scram_credentials()
        assert f"tenant-{A}" in str(users) and f"tenant-{B}" in str(users), users
        # It grants a service principal READ on B's topic only, with CreateAcls.
        h.cli("user", "create", "service-reporting", "--password-stdin",
              stdin="reporting-password-1\n")
        acl = ACL(principal="User:service-reporting", host="*", operation=ACLOperation.READ,
                  permission_type=ACLPermissionType.ALLOW,
                  resource_pattern=ResourcePattern(KPResourceType.TOPIC, TOPIC[B],
                                                   ACLResourcePatternType.LITERAL))
        result = admin.create_acls([acl])
        assert not result["failed"], result
        svc = kp_conf(h, "service-reporting", "reporting-password-1")
        c = KafkaConsumer(**svc, auto_offset_reset="earliest", consumer_timeout_ms=8000)
        c.assign([TopicPartition(TOPIC[B], 0)])
        assert json.loads(next(iter(c)).value)["tenant_id"] == B
        c.close()
        c = KafkaConsumer(**svc)
        assert c.topics() == {TOPIC[B]}
        c.close()
        # READ is not WRITE. (Not idempotent: without WRITE anywhere, Kafka 3 refuses the
        # InitProducerId of an idempotent producer before any topic is asked for.)
        p = KafkaProducer(max_block_ms=8000, enable_idempotence=False, **svc)
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(TOPIC[B], b"{}").get(timeout=15)
        p.close(timeout=5)
        # DescribeAcls with a MATCH filter, then DeleteAcls.
        flt = ACLFilter(principal="User:service-reporting", host="*", operation=ACLOperation.ANY,
                        permission_type=ACLPermissionType.ANY,
                        resource_pattern=ResourcePatternFilter(KPResourceType.TOPIC, TOPIC[B],
                                                               ACLResourcePatternType.MATCH))
        acls, error = admin.describe_acls(flt)
        assert len(acls) == 1, (acls, error)
        deleted = admin.delete_acls([flt])
        assert len(deleted[0][1]) == 1, deleted
        c = KafkaConsumer(**svc)
        assert c.topics() == set()
        c.close()
    finally:
        admin.close()


# =============================================================================================
# HTTP: tenant API keys


@pytest.mark.parametrize("whose", OWN_OR_OTHER)
def test_http_publish_event(h, whose):
    tenant = A if whose == OWN else B
    status, body = h.request("POST", "/v1/events", h.keys[A], envelope(tenant))
    if whose == OWN:
        assert status == 200, body
    else:
        assert status == 403, body
        assert body["error"]["code"] == "forbidden", body


def test_http_topic_listing_shows_only_own(h):
    status, body = h.request("GET", "/v1/topics", h.keys[A])
    assert status == 200, body
    names = [t["name"] for t in body["topics"]]
    assert TOPIC[A] in names
    assert all(n.startswith(f"smarteros.{A}.") for n in names), names


# (method, path template, body) of every per-topic endpoint.
TOPIC_ENDPOINTS = {
    "describe": ("GET", "/v1/topics/{t}", None),
    "read": ("GET", "/v1/topics/{t}/events?offset=0", None),
    "produce": ("POST", "/v1/topics/{t}/records", "records"),
}


@pytest.mark.parametrize("endpoint", list(TOPIC_ENDPOINTS))
@pytest.mark.parametrize("whose", WHOSE)
def test_http_topic_endpoints(h, whose, endpoint):
    method, path, body = TOPIC_ENDPOINTS[endpoint]
    if body == "records":
        body = {"records": [{"value": envelope(A)}]}
    status, reply = h.request(method, path.format(t=TOPIC_OF[whose]), h.keys[A], body)
    if whose == OWN:
        assert status == 200, reply
        if endpoint == "read":
            assert reply["events"][0]["value"]["tenant_id"] == A, reply
    else:
        assert status == 403, reply
        assert reply["error"]["code"] == "forbidden", reply


@pytest.mark.parametrize("endpoint", list(TOPIC_ENDPOINTS))
def test_http_no_hint_that_the_other_tenants_topic_exists(h, endpoint):
    method, path, body = TOPIC_ENDPOINTS[endpoint]
    if body == "records":
        body = {"records": [{"value": envelope(A)}]}
    existing = h.request(method, path.format(t=TOPIC[B]), h.keys[A], body)
    missing = h.request(method, path.format(t=MISSING_TOPIC[B]), h.keys[A], body)
    assert existing[0] == missing[0] == 403
    assert existing[1] == missing[1], (existing, missing)
    # The admin sees the difference, so the tenant's equal answers are the fence's doing.
    assert h.request("GET", f"/v1/topics/{TOPIC[B]}", ADMIN_KEY)[0] == 200
    assert h.request("GET", f"/v1/topics/{MISSING_TOPIC[B]}", ADMIN_KEY)[0] == 404


def test_http_group_listing_shows_only_own(h):
    status, body = h.request("GET", "/v1/groups", h.keys[A])
    assert status == 200, body
    groups = [g["group"] for g in body["groups"]]
    assert GROUP[A] in groups
    assert all(g.startswith(f"smarteros.{A}.") for g in groups), groups


@pytest.mark.parametrize("whose", WHOSE)
def test_http_describe_group(h, whose):
    status, body = h.request("GET", f"/v1/groups/{GROUP_OF[whose]}", h.keys[A])
    if whose == OWN:
        assert status == 200, body
        assert body["group"] == GROUP[A]
    else:
        assert status == 403, body
        assert body["error"]["code"] == "forbidden", body


# Security administration: (method, path, body). The bodies are valid, so a refusal is the
# authorizer's, not the parser's.
ADMIN_ENDPOINTS = {
    "list tenants": ("GET", "/v1/tenants", None),
    "describe B": ("GET", "/v1/tenants/{B}", None),
    "create a tenant": ("POST", "/v1/tenants", {"id": "{B}-twin"}),
    "delete B": ("DELETE", "/v1/tenants/{B}", None),
    "list ACLs": ("GET", "/v1/acls", None),
    "create an ACL opening B's topic": ("POST", "/v1/acls", {"acls": [{
        "resource_type": "TOPIC", "name": "smarteros.{B}.", "pattern": "PREFIXED",
        "principal": "User:tenant-{A}", "host": "*", "operation": "ALL", "permission": "ALLOW"}]}),
    "list users": ("GET", "/v1/users", None),
    "set B's password": ("PUT", "/v1/users/tenant-{B}", {"password": "taken-over-password"}),
    "list API keys": ("GET", "/v1/api-keys", None),
    "issue a key for B": ("POST", "/v1/api-keys", {"tenant": "{B}", "name": "stolen"}),
    "revoke B's key": ("DELETE", "/v1/api-keys/{B_KEY}", None),
}


def _fill(v, h):
    if isinstance(v, str):
        return v.replace("{A}", A).replace("{B}", B).replace("{B_KEY}", h.key_ids[B])
    if isinstance(v, dict):
        return {k: _fill(x, h) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_fill(x, h) for x in v)
    return v


@pytest.mark.parametrize("endpoint", list(ADMIN_ENDPOINTS))
def test_http_security_administration_is_refused(h, endpoint):
    method, path, body = _fill(ADMIN_ENDPOINTS[endpoint], h)
    assert not re.search(r"\{[A-Z_]+\}", path + json.dumps(body)), (path, body)
    status, reply = h.request(method, path, h.keys[A], body)
    assert status == 403, (status, reply)
    assert reply["error"]["code"] == "forbidden", reply
    # Nothing happened: B and its key still work, and the admin still reads what A may not.
    assert h.request("GET", f"/v1/topics/{TOPIC[B]}", h.keys[B])[0] == 200
    if method == "GET":
        assert h.request(method, path, ADMIN_KEY)[0] == 200


def test_http_a_revoked_key_and_no_key_get_401(h):
    out = h.cli("api-key", "create", "--tenant", A, "--name", "short-lived")
    m = re.search(r"key (hk_\S+)\s+id (\S+)", out)
    assert m, out
    key, key_id = m.groups()
    assert h.request("GET", f"/v1/topics/{TOPIC[A]}", key)[0] == 200
    assert h.request("GET", f"/v1/topics/{TOPIC[B]}", key)[0] == 403
    h.cli("api-key", "revoke", key_id)
    status, body = h.request("GET", f"/v1/topics/{TOPIC[A]}", key)
    assert status == 401, body
    assert h.request("GET", f"/v1/topics/{TOPIC[A]}", None)[0] == 401
    assert h.request("GET", f"/v1/topics/{TOPIC[A]}", key[:-4] + "xxxx")[0] == 401


@pytest.mark.parametrize("whose", OWN_OR_OTHER)
def test_http_seed_channel_endpoints(h, whose):
    tenant = A if whose == OWN else B
    status, body = h.request("POST", "/api/events/publish", h.keys[A],
                             {"channel": CHANNEL[tenant], "event": {"type": "order", "data": {"from": A}}})
    assert status == (200 if whose == OWN else 403), body
    status, body = h.request("GET", f"/api/events/history/{CHANNEL[tenant]}?limit=50", h.keys[A])
    if whose == OWN:
        assert status == 200, body
        assert any(p["data"].get("data", {}).get("from") == A for p in body["publications"]), body
    else:
        assert status == 403, body
        assert body["error"]["code"] == "permission_denied", body
        # B's channel holds only B's publication: A's publish did not land.
        status, hist = h.request("GET", f"/api/events/history/{CHANNEL[B]}?limit=50", h.keys[B])
        assert status == 200, hist
        assert [p["data"]["data"]["from"] for p in hist["publications"]] == [B], hist


def test_http_server_api_needs_the_admin_key(h):
    status, body = h.request("POST", "/api/publish", h.keys[A],
                             {"channel": CHANNEL[A], "data": {"x": 1}})
    assert status in (401, 403), body
    status, body = h.request("POST", "/api/publish", ADMIN_KEY, {"channel": CHANNEL[A], "data": {"x": 1}})
    assert status == 200, body


# =============================================================================================
# Every denial above was counted and audited (runs last: pytest keeps file order).


def test_denials_are_counted_and_audited(h):
    metrics = h.metrics()
    for iface in ("kafka", "http"):
        m = re.search(r'auth_failures_total\{interface="%s",reason="tenant_isolation"\} (\d+)'
                      % iface, metrics)
        assert m and int(m.group(1)) >= 10, (iface, m and m.group(0))
    for reason in ("bad_credentials", "unauthenticated"):
        assert re.search(r'auth_failures_total\{interface="kafka",reason="%s"\} [1-9]' % reason,
                         metrics), reason
    assert re.search(r'auth_failures_total\{interface="http",reason="invalid_key"\} [1-9]', metrics)

    want = {
        # (interface, resource, operation) A's principal was refused.
        ("kafka", f"Topic:{TOPIC[B]}", "WRITE"),  # Produce (raw)
        ("kafka", f"Topic:{MISSING_TOPIC[B]}", "WRITE"),
        ("kafka", f"Topic:{TOPIC[B]}", "READ"),  # Fetch (raw)
        ("kafka", f"Topic:{TOPIC[B]}", "DESCRIBE"),  # Metadata
        ("kafka", f"Topic:{MISSING_TOPIC[B]}", "DESCRIBE"),
        ("kafka", f"Topic:{TOPIC[B]}", "DESCRIBE_CONFIGS"),
        ("kafka", f"Topic:{TOPIC[B]}", "ALTER_CONFIGS"),
        ("kafka", f"Topic:{TOPIC[B]}", "DELETE"),
        ("kafka", f"Group:{GROUP[B]}", "READ"),  # OffsetCommit, JoinGroup (raw)
        ("kafka", f"Group:{GROUP[B]}", "DESCRIBE"),  # FindCoordinator, DescribeGroups, OffsetFetch
        ("kafka", f"Group:{GROUP[B]}", "DELETE"),  # DeleteGroups (raw)
        ("kafka", "Cluster:kafka-cluster", "ALTER"),  # CreateAcls, AlterUserScramCredentials
        ("kafka", "Cluster:kafka-cluster", "DESCRIBE"),  # DescribeAcls, DescribeUserScram...
        ("http", f"Topic:{TOPIC[B]}", "WRITE"),
        ("http", f"Topic:{TOPIC[B]}", "READ"),
        ("http", f"Topic:{MISSING_TOPIC[B]}", "READ"),
        ("http", f"Group:{GROUP[B]}", "DESCRIBE"),
        ("http", "Cluster:kafka-cluster", "ALTER"),
        ("http", "Cluster:kafka-cluster", "DESCRIBE"),
    }
    records = []
    deadline = time.time() + 10
    while time.time() < deadline:
        status, body = h.request(
            "GET", "/v1/topics/_herald.audit.security/events?offset=0&limit=1000", ADMIN_KEY)
        assert status == 200, body
        records = [e["value"] for e in body["events"]]
        got = {(r["interface"], r["resource"], r["operation"]) for r in records
               if r["principal"] == PRINCIPAL[A]}
        if want <= got:
            break
        time.sleep(0.2)
    mine = [r for r in records if r["principal"] == PRINCIPAL[A]]
    got = {(r["interface"], r["resource"], r["operation"]) for r in mine}
    assert want <= got, f"not audited: {sorted(want - got)}; audited for A: {sorted(got)}"
    # Topic creation in B's space, and the seed's channel endpoints on B's channel.
    assert any(i == "kafka" and res.startswith(f"Topic:smarteros.{B}.matrix.") and op == "CREATE"
               for i, res, op in got), sorted(got)
    assert any(i == "http" and res == f"Channel:{CHANNEL[B]}" for i, res, op in got), sorted(got)
    for r in mine:
        assert set(r) >= {"interface", "reason", "principal", "resource", "operation", "source",
                          "time_ms"}, r
        assert r["source"] == "127.0.0.1", r
        assert isinstance(r["time_ms"], int) and r["time_ms"] > 1.7e12, r
        # Only B's resources and the cluster: A was refused nothing of its own.
        assert f"smarteros.{A}." not in r["resource"] and f"tenant:{A}:" not in r["resource"], r
    assert {r["reason"] for r in mine if r["resource"] != "Cluster:kafka-cluster"
            and not r["resource"].startswith("Http:")} == {"tenant_isolation"}
    # Failed authentications are audited too, as User:ANONYMOUS on the listener.
    assert any(r["interface"] == "kafka" and r["reason"] == "bad_credentials"
               and r["principal"] == "User:ANONYMOUS" for r in records)
    # The audit topic is not a tenant's to read, over HTTP or Kafka.
    assert h.request("GET", "/v1/topics/_herald.audit.security/events?offset=0", h.keys[A])[0] == 403
    c = KafkaConsumer(**kp(h, A))
    assert "_herald.audit.security" not in c.topics()
    c.close()
