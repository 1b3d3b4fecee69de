"""SCRAM over SASL_PLAINTEXT and SASL_SSL listeners with kafka-python and confluent-kafka.

Starts its own herald (HERALD_BIN) with `--kafka-addr SASL_PLAINTEXT://127.0.0.1:0`, creates
users with `herald user create` and `herald tenant create`, and checks that authenticated
clients produce and consume, and that wrong passwords, deleted users and unauthenticated clients
are refused and counted. Then a second herald with a SASL_SSL listener (its development
certificate generated on first start) runs the seed's Authentication snippet verbatim, the
bootstrap address aside, with the CA trusted through SSL_CERT_FILE.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import confluent_kafka
import pytest
from kafka import KafkaConsumer, KafkaProducer

HERALD_BIN = os.environ["HERALD_BIN"]
KEY = "compat-sasl-admin-key-0123456789"


class Herald:
    def __init__(self, data_dir, listener="SASL_PLAINTEXT=SASL_PLAINTEXT://127.0.0.1:0",
                 extra=()):
        self.data_dir = data_dir
        self.listener = listener.split("=")[0]
        self.proc = subprocess.Popen(
            [HERALD_BIN, "serve", "--data-dir", data_dir, "--http-addr", "127.0.0.1:0",
             "--kafka-listener", listener, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "HERALD_ADMIN_API_KEY": KEY, "HERALD_LOG": "warn"},
        )
        self.kafka = self.http = None
        deadline = time.time() + 30
        while self.http is None:
            assert time.time() < deadline, "herald did not start"
            line = self.proc.stdout.readline()
            assert line, "herald exited"
            if m := re.search(r"Kafka " + self.listener + r"\s+(\S+)", line):
                self.kafka = m.group(1)
            if m := re.search(r"HTTP API\s+(http://\S+)", line):
                self.http = m.group(1)

    def cli(self, *args, stdin=None):
        return subprocess.run(
            [HERALD_BIN, *args], input=stdin, capture_output=True, text=True, timeout=30,
            env={**os.environ, "HERALD_SERVER": self.http, "HERALD_API_KEY": KEY},
        )

    def metrics(self):
        return urllib.request.urlopen(self.http + "/metrics", timeout=10).read().decode()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def data_dir():
    with tempfile.TemporaryDirectory() as d:
        yield d


@pytest.fixture(scope="module")
def herald(data_dir):
    h = Herald(data_dir)
    yield h
    h.stop()


def envelope(tenant):
    return {
        "event_id": str(uuid.uuid4()), "event_type": "order_created", "tenant_id": tenant,
        "service": "shopify", "timestamp": "2026-11-23T10:00:00Z", "data": {"order_id": 1},
    }


def kp_producer(herald, user, password, mechanism="SCRAM-SHA-256"):
    # The seed's snippet, with SASL_PLAINTEXT instead of SASL_SSL.
    return KafkaProducer(
        bootstrap_servers=herald.kafka,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
        value_serializer=lambda v: json.dumps(v).encode(),
        max_block_ms=8000,
        request_timeout_ms=8000,
    )


def test_user_create_prints_a_password_once_and_lists_mechanisms(herald):
    out = herald.cli("user", "create", "service-api-gateway")
    assert out.returncode == 0, out.stderr
    assert "User:service-api-gateway" in out.stdout
    m = re.search(r"password (\S+)", out.stdout)
    assert m and len(m.group(1)) >= 16
    listed = herald.cli("user", "list")
    assert "service-api-gateway" in listed.stdout
    assert "SCRAM-SHA-256,SCRAM-SHA-512" in listed.stdout
    # Only salted credentials are stored: the password appears nowhere in the data directory.
    for root, _, files in os.walk(herald.data_dir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                assert m.group(1).encode() not in fh.read(), f


def test_kafka_python_scram_256_and_512_produce_and_consume(herald):
    # The tenant's SCRAM credentials and the seed's default ACLs on smarteros.76953480-3.*
    r = herald.cli("tenant", "create", "76953480-3", "--password-stdin",
                   stdin="tenant-password-1\n")
    assert r.returncode == 0, r.stderr
    assert "User:tenant-76953480-3" in r.stdout
    topic = "smarteros.76953480-3.shopify.order_created"
    sent = []
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        p = kp_producer(herald, "tenant-76953480-3", "tenant-password-1", mech)
        ev = envelope("76953480-3")
        md = p.send(topic, ev).get(timeout=15)
        assert md.offset >= 0
        sent.append(ev["event_id"])
        p.close()
    c = KafkaConsumer(
        topic, bootstrap_servers=herald.kafka, security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="tenant-76953480-3",
        sasl_plain_password="tenant-password-1", auto_offset_reset="earliest",
        consumer_timeout_ms=8000,
    )
    got = [json.loads(m.value)["event_id"] for m in c]
    c.close()
    assert got == sent


def test_confluent_scram_512_and_refusals(herald):
    delivered = []
    p = confluent_kafka.Producer({
        "bootstrap.servers": herald.kafka, "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "tenant-76953480-3",
        "sasl.password": "tenant-password-1",
    })
    p.produce("smarteros.76953480-3.shopify.order_created", json.dumps(envelope("76953480-3")),
              on_delivery=lambda err, msg: delivered.append(err))
    assert p.flush(15) == 0
    assert delivered == [None]

    errors = []
    bad = confluent_kafka.Producer({
        "bootstrap.servers": herald.kafka, "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "tenant-76953480-3",
        "sasl.password": "not-the-password", "message.timeout.ms": 4000,
        "error_cb": lambda e: errors.append(e.code()),
    })
    bad.produce("smarteros.76953480-3.shopify.order_created", b"{}")
    bad.flush(6)
    assert confluent_kafka.KafkaError._AUTHENTICATION in errors

    reports = []
    plain = confluent_kafka.Producer({
        "bootstrap.servers": herald.kafka, "message.timeout.ms": 3000, "log_level": 0,
    })
    plain.produce("smarteros.76953480-3.shopify.order_created", b"{}",
                  on_delivery=lambda err, msg: reports.append(err))
    plain.flush(6)
    assert len(reports) == 1 and reports[0] is not None, "an unauthenticated client must not produce"

    metrics = herald.metrics()
    assert re.search(r'auth_failures_total\{interface="kafka",reason="bad_credentials"\} [1-9]', metrics)
    assert re.search(r'auth_failures_total\{interface="kafka",reason="unauthenticated"\} [1-9]', metrics)


def test_deleted_users_cannot_authenticate_and_credentials_survive_restart(herald, data_dir):
    assert herald.cli("user", "create", "short-lived", "--password-stdin",
                      stdin="short-lived-pw\n").returncode == 0
    assert herald.cli("user", "delete", "short-lived").returncode == 0
    errors = []
    p = confluent_kafka.Producer({
        "bootstrap.servers": herald.kafka, "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "short-lived",
        "sasl.password": "short-lived-pw", "message.timeout.ms": 4000,
        "error_cb": lambda e: errors.append(e.code()),
    })
    p.produce("smarteros.76953480-3.shopify.order_created", b"{}")
    p.flush(6)
    assert confluent_kafka.KafkaError._AUTHENTICATION in errors

    herald.stop()
    again = Herald(data_dir)
    try:
        producer = kp_producer(again, "tenant-76953480-3", "tenant-password-1")
        assert producer.send("smarteros.76953480-3.shopify.order_created",
                             envelope("76953480-3")).get(timeout=15).offset >= 0
        producer.close()
        assert "short-lived" not in again.cli("user", "list").stdout
    finally:
        again.stop()


# The seed's Authentication snippet (event-streaming design, "Seguridad"), character for character.
SEED_SNIPPET = """
from kafka import KafkaProducer

producer = KafkaProducer(
    bootstrap_servers='redpanda.smarterbot.cl:9092',
    security_protocol='SASL_SSL',
    sasl_mechanism='SCRAM-SHA-256',
    sasl_plain_username='service-api-gateway',
    sasl_plain_password=vault.read('secret/system/redpanda/password')
)
"""

RUN_SNIPPET = """
import json, os, sys, uuid

class vault:
    @staticmethod
    def read(path):
        assert path == 'secret/system/redpanda/password'
        return os.environ['GATEWAY_PASSWORD']

exec(os.environ['SNIPPET'])
event = {"event_id": str(uuid.uuid4()), "event_type": "order_created", "tenant_id": "76953480-3",
         "service": "shopify", "timestamp": "2026-11-24T10:00:00Z", "data": {"order_id": 1}}
md = producer.send('smarteros.76953480-3.shopify.order_created',
                   json.dumps(event).encode()).get(timeout=15)
print(json.dumps({"offset": md.offset, "event_id": event["event_id"]}))
"""


def test_the_seeds_sasl_ssl_snippet_runs_verbatim():
    with tempfile.TemporaryDirectory() as d:
        h = Herald(d, "SASL_SSL=SASL_SSL://127.0.0.1:0")
        try:
            ca = os.path.join(d, "tls", "ca.pem")
            assert os.path.isfile(ca), "a SASL_SSL listener without a certificate gets a dev CA"
            r = h.cli("user", "create", "service-api-gateway", "--password-stdin",
                      stdin="gateway-password-1\n")
            assert r.returncode == 0, r.stderr
            # The seed's ACL for the gateway: WRITE, READ, DESCRIBE on Topic:smarteros.*
            r = h.cli("acl", "create", "--principal", "User:service-api-gateway",
                      "--operation", "WRITE,READ,DESCRIBE", "--topic", "smarteros.", "--prefixed")
            assert r.returncode == 0, r.stderr
            port = h.kafka.rsplit(":", 1)[1]
            snippet = SEED_SNIPPET.replace("redpanda.smarterbot.cl:9092", f"localhost:{port}")
            out = subprocess.run(
                [sys.executable, "-c", RUN_SNIPPET], capture_output=True, text=True, timeout=60,
                env={**os.environ, "SNIPPET": snippet, "SSL_CERT_FILE": ca,
                     "GATEWAY_PASSWORD": "gateway-password-1"},
            )
            assert out.returncode == 0, out.stderr
            sent = json.loads(out.stdout.strip().splitlines()[-1])
            assert sent["offset"] >= 0

            # librdkafka over the same listener reads it back, trusting the CA explicitly.
            c = confluent_kafka.Consumer({
                "bootstrap.servers": h.kafka, "security.protocol": "SASL_SSL",
                "ssl.ca.location": ca, "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "service-api-gateway", "sasl.password": "gateway-password-1",
                "group.id": "gateway-readers", "auto.offset.reset": "earliest",
            })
            r = h.cli("acl", "create", "--principal", "User:service-api-gateway",
                      "--operation", "READ", "--group", "gateway-readers")
            assert r.returncode == 0, r.stderr
            c.subscribe(["smarteros.76953480-3.shopify.order_created"])
            got = None
            deadline = time.time() + 30
            while got is None and time.time() < deadline:
                m = c.poll(1.0)
                if m is not None and m.error() is None:
                    got = json.loads(m.value())["event_id"]
            c.close()
            assert got == sent["event_id"]

            # Without the CA the handshake fails: no plaintext fallback.
            errors = []
            p = confluent_kafka.Producer({
                "bootstrap.servers": h.kafka, "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "service-api-gateway",
                "sasl.password": "gateway-password-1", "message.timeout.ms": 4000,
                "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt",
                "error_cb": lambda e: errors.append(e.code()), "log_level": 0,
            })
            p.produce("smarteros.76953480-3.shopify.order_created", b"{}")
            p.flush(6)
            assert errors, "an untrusted certificate must fail the handshake"
        finally:
            h.stop()


def test_produce_byte_rate_quota_throttles_a_tenant():
    """[quotas.tenants.ID] producer_byte_rate: librdkafka is told throttle_time_ms and the
    connection is muted; the data still all arrives."""
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "herald.toml")
        with open(config, "w") as f:
            f.write('[quotas.tenants."76953480-3"]\nproducer_byte_rate = 20000\n')
        h = Herald(os.path.join(d, "data"), extra=("--config", config))
        try:
            r = h.cli("tenant", "create", "76953480-3", "--password-stdin",
                      stdin="tenant-password-1\n")
            assert r.returncode == 0, r.stderr
            stats = []
            p = confluent_kafka.Producer({
                "bootstrap.servers": h.kafka, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "tenant-76953480-3",
                "sasl.password": "tenant-password-1", "linger.ms": 5,
                "statistics.interval.ms": 200, "stats_cb": stats.append,
            })
            delivered = []
            payload = json.dumps({**envelope("76953480-3"), "data": {"pad": "x" * 2000}})
            started = time.time()
            for _ in range(4):  # four requests of ~20 KB at 20 KB/s after a full bucket
                for _ in range(10):
                    p.produce("smarteros.76953480-3.shopify.order_created", payload,
                              on_delivery=lambda err, msg: delivered.append(err))
                assert p.flush(60) == 0
            elapsed = time.time() - started
            assert delivered == [None] * 40
            throttled = max((b.get("throttle", {}).get("max", 0)
                             for s in stats for b in json.loads(s).get("brokers", {}).values()),
                            default=0)
            # The bucket holds one second (20 KB); 80 KB take about three more.
            assert elapsed > 1.5, elapsed
            p.poll(0.5)
            assert any('"throttle"' in s for s in stats)
            assert throttled > 0 or elapsed > 2.5, (throttled, elapsed)
            assert re.search(r'quota_throttled_total\{interface="kafka"\} [1-9]', h.metrics())
        finally:
            h.stop()


def test_mtls_client_certificates_are_principals():
    """An SSL listener with tls.client_auth = "required": the client certificate's CN is the
    principal, held to ACLs like a SCRAM user; a client without a certificate cannot connect."""
    with tempfile.TemporaryDirectory() as d:
        certs = os.path.join(d, "certs")
        out = subprocess.run([HERALD_BIN, "cert", "dev", "--out", certs, "--client", "svc-a",
                              "--client", "svc-b"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        config = os.path.join(d, "herald.toml")
        with open(config, "w") as f:
            f.write(f'[tls]\ncert = "{certs}/cert.pem"\nkey = "{certs}/key.pem"\n'
                    f'client_auth = "required"\nclient_ca = "{certs}/ca.pem"\n')
        h = Herald(os.path.join(d, "data"), "MTLS=SSL://127.0.0.1:0", extra=("--config", config))
        try:
            topic = "smarteros.76953480-3.shopify.order_created"
            req = urllib.request.Request(
                h.http + "/v1/events", data=json.dumps(envelope("76953480-3")).encode(),
                headers={"X-API-Key": KEY, "Content-Type": "application/json"}, method="POST")
            assert urllib.request.urlopen(req, timeout=10).status == 200
            r = h.cli("acl", "create", "--principal", "User:svc-a", "--operation", "READ",
                      "--topic", topic)
            assert r.returncode == 0, r.stderr

            def client(name, **extra):
                conf = dict(bootstrap_servers=h.kafka, security_protocol="SSL",
                            ssl_cafile=f"{certs}/ca.pem", request_timeout_ms=8000,
                            api_version_auto_timeout_ms=8000)
                if name:
                    conf.update(ssl_certfile=f"{certs}/client-{name}.pem",
                                ssl_keyfile=f"{certs}/client-{name}-key.pem")
                return KafkaConsumer(**conf, **extra)

            a = client("svc-a", auto_offset_reset="earliest", consumer_timeout_ms=8000)
            assert a.topics() == {topic}
            a.subscribe([topic])
            assert json.loads(next(iter(a)).value)["tenant_id"] == "76953480-3"
            a.close()
            b = client("svc-b")
            assert b.topics() == set()
            b.close()
            import ssl
            from kafka.errors import NoBrokersAvailable
            # Refused in the handshake (TLS 1.3 alert "certificate required").
            with pytest.raises((NoBrokersAvailable, ssl.SSLError)):
                client(None)
        finally:
            h.stop()
