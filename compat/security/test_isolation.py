"""The tenant isolation matrix: tenant A tries every operation on its own resources (allowed)
and on tenant B's (denied), on every interface, with the clients users have.

One herald (HERALD_BIN) with a SASL_SSL Kafka listener and HTTPS/WSS, its development CA
generated on first start. Tenants come from `herald tenant create` (SCRAM credentials, the
seed's default ACLs, a tenant API key). Kafka: kafka-python (SCRAM-SHA-256) and confluent-kafka
(SCRAM-SHA-512) over TLS. HTTP: the tenant API key. WebSocket: centrifuge-js with a tenant
token (compat/realtime/isolation_ws.mjs). Every denial must also be counted and audited.
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
import jwt
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
)
from kafka.structs import OffsetAndMetadata

HERALD_BIN = os.environ["HERALD_BIN"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_KEY = "compat-isolation-admin-key-0123456789"
JWT_SECRET = "compat-isolation-jwt-secret-0123456789abcdef0123456789"
A, B = "76953480-3", "acme-2"
PW = {A: "tenant-a-password-1", B: "tenant-b-password-1"}
TOPIC = {t: f"smarteros.{t}.shopify.order_created" for t in (A, B)}
GROUP = {t: f"smarteros.{t}.audit-logger" for t in (A, B)}
CHANNEL = {t: f"tenant:{t}:orders" for t in (A, B)}
KAFKA_TIMEOUT_MS = 15000


class Herald:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [HERALD_BIN, "serve", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0",
             "--http-tls", "--kafka-listener", "SASL_SSL=SASL_SSL://127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "HERALD_ADMIN_API_KEY": ADMIN_KEY, "HERALD_JWT_SECRET": JWT_SECRET,
                 "HERALD_SUPERUSERS": "User:ops",
                 "HERALD_GROUP_INITIAL_REBALANCE_DELAY_MS": "0", "HERALD_LOG": "warn"},
        )
        self.kafka = self.http = None
        deadline = time.time() + 30
        while self.http is None:
            assert time.time() < deadline, "herald did not start"
            line = self.proc.stdout.readline()
            assert line, "herald exited"
            if m := re.search(r"Kafka SASL_SSL\s+(\S+)", line):
                self.kafka = m.group(1)
            if m := re.search(r"HTTP API\s+(https://\S+)", line):
                self.http = m.group(1)
        self.ca = os.path.join(data_dir, "tls", "ca.pem")
        self.ssl = ssl.create_default_context(cafile=self.ca)

    def cli(self, *args, stdin=None):
        out = subprocess.run(
            [HERALD_BIN, *args], input=stdin, capture_output=True, text=True, timeout=30,
            env={**os.environ, "HERALD_SERVER": self.http, "HERALD_API_KEY": ADMIN_KEY,
                 "HERALD_CA_CERT": self.ca},
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def request(self, method, path, key, body=None):
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

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def envelope(tenant):
    return {
        "event_id": str(uuid.uuid4()), "event_type": "order_created", "tenant_id": tenant,
        "service": "shopify", "timestamp": "2026-11-24T10:00:00Z", "data": {"order_id": 1},
    }


def kp_conf(h, tenant, mechanism="SCRAM-SHA-256"):
    return dict(
        bootstrap_servers=h.kafka, security_protocol="SASL_SSL", ssl_cafile=h.ca,
        sasl_mechanism=mechanism, sasl_plain_username=f"tenant-{tenant}",
        sasl_plain_password=PW[tenant], request_timeout_ms=KAFKA_TIMEOUT_MS,
    )


def ck_conf(h, tenant, **extra):
    return {
        "bootstrap.servers": h.kafka, "security.protocol": "SASL_SSL", "ssl.ca.location": h.ca,
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": f"tenant-{tenant}",
        "sasl.password": PW[tenant], **extra,
    }


@pytest.fixture(scope="module")
def h():
    d = tempfile.mkdtemp(prefix="herald-isolation-")
    server = Herald(d)
    try:
        tenants = {}
        for t in (A, B):
            tenants[t] = json.loads(
                server.cli("tenant", "create", t, "--password-stdin", "--json", stdin=PW[t] + "\n"))
        server.keys = {t: tenants[t]["api_key"] for t in (A, B)}
        # Each tenant has a topic with a record, a group with a committed offset and a channel
        # with a publication — made by the tenant itself, as a user would.
        for t in (A, B):
            p = KafkaProducer(value_serializer=lambda v: json.dumps(v).encode(), **kp_conf(server, t))
            p.send(TOPIC[t], envelope(t)).get(timeout=15)
            p.close()
            c = KafkaConsumer(group_id=GROUP[t], enable_auto_commit=False, **kp_conf(server, t))
            c.commit({TopicPartition(TOPIC[t], 0): OffsetAndMetadata(1, "", -1)})
            c.close()
            status, body = server.request("POST", "/api/events/publish", server.keys[t],
                                          {"channel": CHANNEL[t], "event": {"type": "order", "data": {"n": 1}}})
            assert status == 200, body
        yield server
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Kafka: kafka-python (SCRAM-SHA-256 over TLS)


def test_kafka_python_metadata_shows_only_own_topics(h):
    c = KafkaConsumer(**kp_conf(h, A))
    topics = c.topics()
    c.close()
    assert TOPIC[A] in topics
    assert not any(B in t for t in topics), topics


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_kafka_python_produce(h, tenant, allowed):
    p = KafkaProducer(value_serializer=lambda v: json.dumps(v).encode(), max_block_ms=8000, **kp_conf(h, A))
    try:
        if allowed:
            assert p.send(TOPIC[tenant], envelope(tenant)).get(timeout=15).offset >= 0
        else:
            with pytest.raises(TopicAuthorizationFailedError):
                p.send(TOPIC[tenant], envelope(tenant)).get(timeout=15)
    finally:
        p.close(timeout=5)


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_kafka_python_group_commit_and_fetch_offsets(h, tenant, allowed):
    c = KafkaConsumer(group_id=GROUP[tenant], enable_auto_commit=False, **kp_conf(h, A))
    tp = TopicPartition(TOPIC[A], 0)
    try:
        if allowed:
            c.commit({tp: OffsetAndMetadata(1, "", -1)})
            assert c.committed(tp) == 1
        else:
            with pytest.raises(GroupAuthorizationFailedError):
                c.commit({tp: OffsetAndMetadata(1, "", -1)})
            with pytest.raises(GroupAuthorizationFailedError):
                c.committed(TopicPartition(TOPIC[B], 0))
    finally:
        c.close()


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_kafka_python_describe_configs(h, tenant, allowed):
    from kafka.admin import ConfigResource as KPConfigResource
    admin = KafkaAdminClient(**kp_conf(h, A))
    try:
        resp = admin.describe_configs([KPConfigResource("TOPIC", TOPIC[tenant])])
        code = resp[0].resources[0][0]
        assert code == (0 if allowed else TopicAuthorizationFailedError.errno)
    finally:
        admin.close()


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_kafka_python_describe_groups(h, tenant, allowed):
    admin = KafkaAdminClient(**kp_conf(h, A))
    try:
        if allowed:
            assert admin.describe_consumer_groups([GROUP[tenant]])
        else:
            with pytest.raises((GroupAuthorizationFailedError, KafkaError)):
                admin.describe_consumer_groups([GROUP[tenant]])
        listed = [g[0] for g in admin.list_consumer_groups()]
        assert GROUP[B] not in listed
    finally:
        admin.close()


def test_kafka_python_topic_admin_on_the_other_tenant_is_refused(h):
    from kafka.admin import NewTopic
    admin = KafkaAdminClient(**kp_conf(h, A))
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            admin.create_topics([NewTopic(f"smarteros.{B}.shopify.refund_created", 1, 1)])
        with pytest.raises(TopicAuthorizationFailedError):
            admin.delete_topics([TOPIC[B]])
        with pytest.raises(GroupAuthorizationFailedError):
            admin.delete_consumer_groups([GROUP[B]])
    finally:
        admin.close()


def test_kafka_python_security_administration_is_refused(h):
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             ResourcePatternFilter, ResourceType)
    admin = KafkaAdminClient(**kp_conf(h, A))
    try:
        with pytest.raises(ClusterAuthorizationFailedError):
            admin.describe_acls(ACLFilter(
                principal=None, host="*", operation=ACLOperation.ANY,
                permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY)))
    finally:
        admin.close()


# ---------------------------------------------------------------------------------------------
# Kafka: confluent-kafka / librdkafka (SCRAM-SHA-512 over TLS)


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_confluent_produce(h, tenant, allowed):
    reports = []
    p = confluent_kafka.Producer(ck_conf(h, A, **{"message.timeout.ms": 8000}))
    p.produce(TOPIC[tenant], json.dumps(envelope(tenant)),
              on_delivery=lambda err, msg: reports.append(err))
    p.flush(15)
    assert len(reports) == 1
    if allowed:
        assert reports[0] is None
    else:
        assert reports[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_confluent_consume(h, tenant, allowed):
    c = confluent_kafka.Consumer(ck_conf(h, A, **{
        "group.id": GROUP[A] + "-consume", "enable.auto.commit": False,
        "auto.offset.reset": "earliest"}))
    c.subscribe([TOPIC[tenant]])
    got, error = None, None
    deadline = time.time() + 15
    while got is None and error is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            error = m.error().code()
        else:
            got = json.loads(m.value())
    c.close()
    if allowed:
        assert got is not None and got["tenant_id"] == A
    else:
        assert got is None
        assert error == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_confluent_list_offsets(h):
    c = confluent_kafka.Consumer(ck_conf(h, A, **{"group.id": GROUP[A]}))
    try:
        low, high = c.get_watermark_offsets(confluent_kafka.TopicPartition(TOPIC[A], 0), timeout=10)
        assert high >= 1
        # librdkafka learns from Metadata (TOPIC_AUTHORIZATION_FAILED) that the partition is not
        # for it and refuses locally; an existing and a missing topic of B's look the same.
        codes = []
        for topic in (TOPIC[B], f"smarteros.{B}.nothing.here"):
            with pytest.raises(confluent_kafka.KafkaException) as e:
                c.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=10)
            codes.append(e.value.args[0].code())
        assert codes[0] == codes[1]
        assert codes[0] in (confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                            confluent_kafka.KafkaError._UNKNOWN_PARTITION)
    finally:
        c.close()


def test_confluent_no_hint_that_the_other_tenants_topic_exists(h):
    admin = AdminClient(ck_conf(h, A))
    existing = admin.list_topics(topic=TOPIC[B], timeout=10).topics[TOPIC[B]].error
    missing_name = f"smarteros.{B}.nothing.here"
    missing = admin.list_topics(topic=missing_name, timeout=10).topics[missing_name].error
    assert existing is not None and missing is not None
    assert existing.code() == missing.code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Nor was the missing topic created by asking.
    status, body = h.request("GET", f"/v1/topics/{missing_name}", ADMIN_KEY)
    assert status == 404, body


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_confluent_describe_configs(h, tenant, allowed):
    admin = AdminClient(ck_conf(h, A))
    fut = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, TOPIC[tenant])])
    for f in fut.values():
        if allowed:
            assert "retention.ms" in f.result(timeout=10)
        else:
            with pytest.raises(confluent_kafka.KafkaException) as e:
                f.result(timeout=10)
            assert e.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_confluent_scram_administration_is_refused(h):
    from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)
    admin = AdminClient(ck_conf(h, A))
    # A tries to set B's password.
    futs = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        f"tenant-{B}", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
        b"taken-over-password", b"salt")])
    for f in futs.values():
        with pytest.raises(confluent_kafka.KafkaException) as e:
            f.result(timeout=10)
        assert e.value.args[0].code() == confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED


# ---------------------------------------------------------------------------------------------
# HTTP: the tenant API key


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_http_publish(h, tenant, allowed):
    status, body = h.request("POST", "/v1/events", h.keys[A], envelope(tenant))
    assert status == (200 if allowed else 403), body
    if not allowed:
        assert body["error"]["code"] == "forbidden"


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_http_read_describe_and_produce_records(h, tenant, allowed):
    want = 200 if allowed else 403
    assert h.request("GET", f"/v1/topics/{TOPIC[tenant]}/events?offset=0", h.keys[A])[0] == want
    assert h.request("GET", f"/v1/topics/{TOPIC[tenant]}", h.keys[A])[0] == want
    status, _ = h.request("POST", f"/v1/topics/{TOPIC[tenant]}/records", h.keys[A],
                          {"records": [{"value": envelope(tenant)}]})
    assert status == want


def test_http_no_hint_that_the_other_tenants_topic_exists(h):
    existing = h.request("GET", f"/v1/topics/{TOPIC[B]}/events?offset=0", h.keys[A])
    missing = h.request("GET", f"/v1/topics/smarteros.{B}.nothing.here/events?offset=0", h.keys[A])
    assert existing == missing
    assert existing[0] == 403


def test_http_listings_show_only_own(h):
    status, body = h.request("GET", "/v1/topics", h.keys[A])
    assert status == 200
    names = [t["name"] for t in body["topics"]]
    assert TOPIC[A] in names and not any(B in n for n in names), names
    status, body = h.request("GET", "/v1/groups", h.keys[A])
    assert status == 200
    groups = [g["group"] for g in body["groups"]]
    assert GROUP[B] not in groups


@pytest.mark.parametrize("path", ["/v1/tenants", "/v1/acls", "/v1/users", "/v1/api-keys",
                                  f"/v1/groups/{GROUP[B]}"])
def test_http_administration_and_other_groups_are_refused(h, path):
    assert h.request("GET", path, h.keys[A])[0] == 403


@pytest.mark.parametrize("tenant,allowed", [(A, True), (B, False)])
def test_http_seed_channel_endpoints(h, tenant, allowed):
    want = 200 if allowed else 403
    status, body = h.request("POST", "/api/events/publish", h.keys[A],
                             {"channel": CHANNEL[tenant], "event": {"type": "order", "data": {}}})
    assert status == want, body
    status, body = h.request("GET", f"/api/events/history/{CHANNEL[tenant]}?limit=50", h.keys[A])
    assert status == want, body


def test_http_server_api_needs_an_admin_key(h):
    status, _ = h.request("POST", "/api/publish", h.keys[A],
                          {"channel": CHANNEL[A], "data": {"x": 1}})
    assert status in (401, 403)
    status, _ = h.request("POST", "/api/publish", ADMIN_KEY, {"channel": CHANNEL[B], "data": {"x": 1}})
    assert status == 200


# ---------------------------------------------------------------------------------------------
# WebSocket: centrifuge-js with tenant A's token


def test_websocket_centrifuge_js(h):
    now = int(time.time())
    token = jwt.encode({"sub": "user-a", "tenant_id": A, "iat": now, "exp": now + 600},
                       JWT_SECRET, algorithm="HS256")
    ws = h.http.replace("https://", "wss://") + "/connection/websocket"
    out = subprocess.run(
        ["node", os.path.join(ROOT, "realtime", "isolation_ws.mjs")],
        capture_output=True, text=True, timeout=60, cwd=os.path.join(ROOT, "realtime"),
        env={**os.environ, "WS_URL": ws, "TOKEN_A": token, "OWN_CHANNEL": CHANNEL[A],
             "OTHER_CHANNEL": CHANNEL[B], "NODE_EXTRA_CA_CERTS": h.ca},
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for op in ("subscribe", "publish", "history"):
        assert result[op]["own"] == "ok", result
        assert result[op]["other"] == 103, result  # permission denied


# ---------------------------------------------------------------------------------------------
# Superusers and ACL administration over the Kafka protocol


def test_a_superuser_manages_acls_and_an_acl_opens_exactly_what_it_names(h):
    from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, ResourcePattern, ResourcePatternFilter,
                             ResourceType)
    h.cli("user", "create", "ops", "--password-stdin", stdin="ops-password-123\n")
    ops = dict(kp_conf(h, A), sasl_plain_username="ops", sasl_plain_password="ops-password-123")
    admin = KafkaAdminClient(**ops)
    try:
        # A superuser reads any tenant's topic.
        c = KafkaConsumer(**ops, auto_offset_reset="earliest", consumer_timeout_ms=8000)
        c.assign([TopicPartition(TOPIC[B], 0)])
        assert json.loads(next(iter(c)).value)["tenant_id"] == B
        c.close()
        # It grants a service principal READ on B's topic only, with CreateAcls.
        h.cli("user", "create", "service-reporting", "--password-stdin",
              stdin="reporting-password-1\n")
        acl = ACL(principal="User:service-reporting", host="*", operation=ACLOperation.READ,
                  permission_type=ACLPermissionType.ALLOW,
                  resource_pattern=ResourcePattern(ResourceType.TOPIC, TOPIC[B],
                                                   ACLResourcePatternType.LITERAL))
        result = admin.create_acls([acl])
        assert not result["failed"], result
        svc = dict(kp_conf(h, A), sasl_plain_username="service-reporting",
                   sasl_plain_password="reporting-password-1")
        c = KafkaConsumer(**svc, auto_offset_reset="earliest", consumer_timeout_ms=8000)
        c.assign([TopicPartition(TOPIC[B], 0)])
        assert json.loads(next(iter(c)).value)["tenant_id"] == B
        c.close()
        assert KafkaConsumer(**svc).topics() == {TOPIC[B]}
        p = KafkaProducer(max_block_ms=8000, **svc)
        with pytest.raises(TopicAuthorizationFailedError):
            p.send(TOPIC[B], b"{}").get(timeout=15)
        p.close(timeout=5)
        # DescribeAcls with a MATCH filter, then DeleteAcls.
        flt = ACLFilter(principal="User:service-reporting", host="*", operation=ACLOperation.ANY,
                        permission_type=ACLPermissionType.ANY,
                        resource_pattern=ResourcePatternFilter(ResourceType.TOPIC, TOPIC[B],
                                                               ACLResourcePatternType.MATCH))
        acls, error = admin.describe_acls(flt)
        assert len(acls) == 1, (acls, error)
        deleted = admin.delete_acls([flt])
        assert len(deleted[0][1]) == 1, deleted
        assert KafkaConsumer(**svc).topics() == set()
    finally:
        admin.close()


# ---------------------------------------------------------------------------------------------
# Every denial above was counted and audited (runs last: pytest keeps file order).


def test_denials_are_counted_and_audited_per_interface(h):
    with urllib.request.urlopen(h.http + "/metrics", timeout=10, context=h.ssl) as r:
        metrics = r.read().decode()
    for iface in ("kafka", "http", "websocket"):
        assert re.search(
            r'auth_failures_total\{interface="%s",reason="tenant_isolation"\} [1-9]' % iface,
            metrics), iface
    records = []
    deadline = time.time() + 10
    while time.time() < deadline:
        status, body = h.request(
            "GET", "/v1/topics/_herald.audit.security/events?offset=0&limit=1000", ADMIN_KEY)
        assert status == 200, body
        records = [e["value"] for e in body["events"]]
        if {r["interface"] for r in records} >= {"kafka", "http", "websocket"}:
            break
        time.sleep(0.2)
    by_iface = {i: [r for r in records if r["interface"] == i] for i in ("kafka", "http", "websocket")}
    for iface in ("kafka", "http"):
        hits = [r for r in by_iface[iface]
                if r["principal"] == f"User:tenant-{A}" and r["resource"] == f"Topic:{TOPIC[B]}"]
        assert hits, (iface, by_iface[iface][:5])
        assert all(r["source"] == "127.0.0.1" and r["operation"] for r in hits)
    ws = [r for r in by_iface["websocket"] if r["resource"] == f"Channel:{CHANNEL[B]}"]
    assert ws and ws[0]["principal"] == "User:user-a", by_iface["websocket"][:5]
    # The audit topic is not a tenant's to read.
    assert h.request("GET", "/v1/topics/_herald.audit.security/events?offset=0", h.keys[A])[0] == 403
