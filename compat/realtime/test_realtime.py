"""centrifuge-python 0.7 (asyncio WebSocket client) and cent 5 (server API client) against
Herald's Centrifugo-compatible real-time gateway.

Run by compat/run as the realtime-python suite. Needs HERALD_HTTP, HERALD_API_KEY (the admin /
server-API key), HERALD_TEST_JWT_SECRET (the HMAC secret the server was started with as
HERALD_JWT_SECRET) and HERALD_BIN (the binary: the rate-limit and route tests start servers of
their own, with their own environment and config file).

Every test body runs in its own event loop (asyncio.run) under a time limit, every wait in it is
bounded by WAIT, and every connection and server it opens is closed at its end.
"""

import asyncio
import contextlib
import functools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timezone

import jwt
import pytest
import requests
from cent import BatchRequest, BroadcastRequest, ChannelsRequest, CentApiResponseError
from cent import CentUnauthorizedError, DisconnectRequest, HistoryRemoveRequest, HistoryRequest
from cent import InfoRequest, PresenceRequest, PresenceStatsRequest, PublishRequest
from cent import StreamPosition as CentPosition
from cent import SubscribeRequest, UnsubscribeRequest
from cent import Client as CentClient
from centrifuge import ClientDisconnectedError, ClientEventHandler, ClientState
from centrifuge import OperationTimeoutError, ReplyError, StreamPosition, SubscriptionEventHandler
from centrifuge import SubscriptionUnsubscribedError
from centrifuge import Client as WsClient

HTTP = os.environ["HERALD_HTTP"].rstrip("/")
API_KEY = os.environ["HERALD_API_KEY"]
SECRET = os.environ["HERALD_TEST_JWT_SECRET"]
HERALD_BIN = os.environ.get("HERALD_BIN", "")

# The bound of every single wait (an event, a reply, a number of publications).
WAIT = 10.0
# How long to keep listening after the expected publications arrived, to catch extra ones.
SETTLE = 0.5
# The bound of a whole test body.
TEST_TIMEOUT = 120.0
# The subscription options of the seed's frontend: recovery on reconnect, positions, join/leave.
FULL = dict(recoverable=True, positioned=True, join_leave=True)

CENT = CentClient(f"{HTTP}/api", api_key=API_KEY, timeout=WAIT)


# --- helpers ----------------------------------------------------------------------------------


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def ws_url(base=HTTP):
    return re.sub(r"^http", "ws", base) + "/connection/websocket"


def mint(claims, secret=SECRET, algorithm="HS256"):
    now = int(time.time())
    return jwt.encode({"iat": now, "exp": now + 3600, **claims}, secret, algorithm=algorithm)


def tenant_token(user, tenant=123, **claims):
    return mint({"sub": user, "tenant_id": tenant, **claims})


def admin_token(user):
    return mint({"sub": user, "tenant_id": 1, "roles": ["admin"]})


def run_async(fn):
    """Runs an async test body in a fresh event loop, bounded by TEST_TIMEOUT. Fixtures are
    passed through (pytest reads the parameters of the wrapped function)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT))

    return wrapper


async def call(fn, *args):
    """A blocking cent call, off the event loop: the WebSocket clients keep reading meanwhile."""
    return await asyncio.to_thread(fn, *args)


def wait_for(what, predicate, timeout=WAIT, interval=0.05):
    """Polls `predicate` (blocking) until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Recorder:
    """Records the events of a centrifuge-python client or subscription. Handlers only record:
    an exception escaping a handler stops the client."""

    def __init__(self):
        self.log = []

    def _add(self, name, ctx):
        self.log.append((name, ctx))

    def all(self, name, pred=None):
        return [c for n, c in self.log if n == name and (pred is None or pred(c))]

    async def until(self, name, count=1, what=None, pred=None, timeout=WAIT):
        """Waits until `count` events `name` (matching `pred`) were recorded; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.all(name, pred)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what or name} ({len(got)} of {count}); "
                    f"events: {self.log!r}"
                )
            await asyncio.sleep(0.02)


def _recording(name):
    async def handler(self, ctx):
        self._add(name, ctx)

    return handler


class ClientEvents(Recorder, ClientEventHandler):
    on_connecting = _recording("connecting")
    on_connected = _recording("connected")
    on_disconnected = _recording("disconnected")
    on_error = _recording("error")
    # Server-side subscriptions.
    on_subscribed = _recording("subscribed")
    on_subscribing = _recording("subscribing")
    on_unsubscribed = _recording("unsubscribed")
    on_publication = _recording("publication")
    on_join = _recording("join")
    on_leave = _recording("leave")


class SubEvents(Recorder, SubscriptionEventHandler):
    on_subscribing = _recording("subscribing")
    on_subscribed = _recording("subscribed")
    on_unsubscribed = _recording("unsubscribed")
    on_publication = _recording("publication")
    on_join = _recording("join")
    on_leave = _recording("leave")
    on_error = _recording("error")


class Clients:
    """The WebSocket connections of one test; `async with Clients() as cl` disconnects them all."""

    def __init__(self):
        self.clients = []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for c in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.disconnect(), WAIT)

    async def connect(self, token, base=HTTP, **options):
        events = ClientEvents()
        client = WsClient(
            ws_url(base),
            events=events,
            token=token,
            proxy=None,
            max_reconnect_delay=1.0,
            **options,
        )
        client.rec = events
        self.clients.append(client)
        await asyncio.wait_for(client.connect(), WAIT)
        try:
            await client.ready(timeout=WAIT)
        except Exception as e:
            raise AssertionError(f"connect failed: {e!r}; events: {events.log!r}") from e
        return client


async def subscribe(client, channel, **options):
    events = SubEvents()
    sub = client.new_subscription(channel, events=events, **options)
    sub.rec = events
    await sub.subscribe()
    try:
        await sub.ready(timeout=WAIT)
    except Exception as e:
        raise AssertionError(f"subscribe to {channel} failed: {e!r}; events: {events.log!r}") from e
    return sub


async def subscribe_refused(client, channel):
    """A subscribe the server refuses: the subscription goes to unsubscribed with the server's
    error code. Returns that context."""
    events = SubEvents()
    sub = client.new_subscription(channel, events=events)
    await sub.subscribe()
    (ctx,) = await events.until("unsubscribed", 1, f"the refusal of the subscribe to {channel}")
    assert not events.all("subscribed"), f"{channel} was subscribed"
    with pytest.raises(SubscriptionUnsubscribedError):
        await sub.ready(timeout=1)
    client.remove_subscription(sub)
    return ctx


async def reply_error(coro, what):
    """The ReplyError of a client call that must fail."""
    try:
        result = await asyncio.wait_for(coro, WAIT)
    except ReplyError as e:
        return e
    raise AssertionError(f"{what} succeeded ({result!r}); an error was expected")


def offsets(pubs):
    return [p.offset for p in pubs]


def iso_now():
    return datetime.now(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- servers of the tests' own -----------------------------------------------------------------


class OwnHerald:
    """A herald of a test's own (HERALD_BIN) with extra environment or arguments, port 0."""

    def __init__(self, workdir, env=None, args=()):
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        os.makedirs(self.data_dir)
        self.env = env or {}
        self.args = list(args)
        self.key = f"compat-{uuid.uuid4().hex}"
        self.log_path = os.path.join(workdir, "herald.log")
        self.proc = None

    def start(self):
        assert HERALD_BIN and os.access(HERALD_BIN, os.X_OK), f"HERALD_BIN={HERALD_BIN!r} is not executable"
        # The suite's own HERALD_* variables are not this server's configuration.
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env.update(HERALD_JWT_SECRET=SECRET, HERALD_ADMIN_API_KEY=self.key, **self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [HERALD_BIN, "serve", "--data-dir", self.data_dir, "--http-addr", "127.0.0.1:0",
                 "--kafka-addr", "PLAINTEXT://127.0.0.1:0", *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                text=True,
            )
        lines = []
        found = {}

        def read():
            for line in self.proc.stdout:
                lines.append(line)
                m = re.match(r"^\s*HTTP API\s+(http://\S+)", line)
                if m:
                    found["http"] = m.group(1)
                m = re.match(r"^\s*Kafka PLAINTEXT\s+(\S+)", line)
                if m:
                    found["kafka"] = m.group(1)

        threading.Thread(target=read, daemon=True).start()
        wait_for(
            f"herald's listeners (output: {lines})",
            lambda: len(found) == 2 or self.proc.poll() is not None,
            30,
        )
        assert len(found) == 2, f"herald exited ({self.proc.returncode}): {''.join(lines)}\n{self.log_tail()}"
        self.http, self.kafka = found["http"], found["kafka"]
        wait_for("/health", lambda: requests.get(f"{self.http}/health", timeout=5).ok)
        self.cent = CentClient(f"{self.http}/api", api_key=self.key, timeout=WAIT)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines=40):
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            text = f.read().decode(errors="replace")
            return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def own_herald(env=None, args=(), config=None):
    workdir = tempfile.mkdtemp(prefix="herald-realtime.")
    try:
        if config is not None:
            path = os.path.join(workdir, "herald.toml")
            with open(path, "w") as f:
                f.write(config)
            args = [*args, "--config", path]
        server = OwnHerald(workdir, env, args)
        try:
            yield server.start()
        finally:
            server.kill()
            # Shown by pytest for a failing test only.
            print(f"--- the test's herald (stderr, last lines) ---\n{server.log_tail()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# The contract's example configuration, verbatim.
EXAMPLE_CONFIG = """\
[realtime]
tenant_claim = "tenant_id"
[realtime.rate_limits]
window_secs = 60
max_requests = 100
[realtime.namespaces.tenant]
tenant_bound = true
history_size = 100
history_ttl_secs = 3600
[[realtime.routes]]
from = "smarteros.{tenant}.shopify.order_*"
to = "tenant:{tenant}:orders"
"""


@pytest.fixture
def rate_limited_herald():
    with own_herald(env={"HERALD_RATE_LIMIT_MAX_REQUESTS": "5", "HERALD_RATE_LIMIT_WINDOW": "60",
                         "HERALD_ENABLE_RATE_LIMIT": "true"}) as server:
        yield server


@pytest.fixture
def routed_herald():
    with own_herald(config=EXAMPLE_CONFIG) as server:
        yield server


# --- the server API with cent -------------------------------------------------------------------


@run_async
async def test_publish_with_idempotency_key_returns_the_same_offset():
    channel = f"tenant:123:{unique('idem')}"
    async with Clients() as cl:
        c = await cl.connect(tenant_token(unique("py")))
        sub = await subscribe(c, channel, **FULL)
        (subscribed,) = sub.rec.all("subscribed")
        epoch = subscribed.stream_position.epoch
        key = unique("order-created")
        first = await call(CENT.publish, PublishRequest(channel=channel, data={"n": 1}, idempotency_key=key))
        again = await call(CENT.publish, PublishRequest(channel=channel, data={"n": 1}, idempotency_key=key))
        assert (first.offset, first.epoch) == (1, epoch)
        assert (again.offset, again.epoch) == (first.offset, first.epoch)
        await sub.rec.until("publication", 1, "the publication")
        await asyncio.sleep(SETTLE)
        assert [p.pub.data for p in sub.rec.all("publication")] == [{"n": 1}], "a repeat delivers nothing"
        history = await call(CENT.history, HistoryRequest(channel=channel, limit=100))
        assert offsets(history.publications) == [1]

        other = await call(CENT.publish, PublishRequest(channel=channel, data={"n": 2}, idempotency_key=unique("k")))
        plain = await call(CENT.publish, PublishRequest(channel=channel, data={"n": 3}))
        assert (other.offset, plain.offset) == (2, 3)
        await sub.rec.until("publication", 3, "the next publications")
        assert offsets(p.pub for p in sub.rec.all("publication")) == [1, 2, 3]


@run_async
async def test_broadcast_reaches_every_channel():
    channels = [f"tenant:123:{unique('broadcast')}" for _ in range(2)]
    async with Clients() as cl:
        c = await cl.connect(tenant_token(unique("py")))
        subs = [await subscribe(c, ch, **FULL) for ch in channels]
        data = {"type": "maintenance", "at": "02:00"}
        result = await call(CENT.broadcast, BroadcastRequest(channels=channels, data=data))
        assert len(result.responses) == 2, result
        for response in result.responses:
            assert response.error is None, result
            assert response.result.offset == 1, result
        for sub in subs:
            (pub,) = await sub.rec.until("publication", 1, f"the broadcast on {sub.channel}")
            assert (pub.pub.data, pub.pub.offset) == (data, 1)


@run_async
async def test_server_side_subscribe_and_unsubscribe():
    user = unique("py")
    channel = f"tenant:123:{unique('server-side')}"
    async with Clients() as cl:
        c = await cl.connect(tenant_token(user))
        await call(CENT.subscribe, SubscribeRequest(user=user, channel=channel))
        (subscribed,) = await c.rec.until("subscribed", 1, "the server-side subscription",
                                          pred=lambda x: x.channel == channel)
        published = await call(CENT.publish, PublishRequest(channel=channel, data={"n": 1}))
        (pub,) = await c.rec.until("publication", 1, "a publication of the server-side subscription",
                                   pred=lambda x: x.channel == channel)
        assert (pub.pub.data, pub.pub.offset) == ({"n": 1}, published.offset)

        presence = await call(CENT.presence, PresenceRequest(channel=channel))
        assert list(presence.presence) == [c.client_id]
        assert presence.presence[c.client_id].user == user

        await call(CENT.unsubscribe, UnsubscribeRequest(user=user, channel=channel))
        await c.rec.until("unsubscribed", 1, "the end of the server-side subscription",
                          pred=lambda x: x.channel == channel)
        await call(CENT.publish, PublishRequest(channel=channel, data={"n": 2}))
        await asyncio.sleep(SETTLE)
        assert len(c.rec.all("publication")) == 1, "a publication after the unsubscribe was delivered"
        assert c.state == ClientState.CONNECTED


@run_async
async def test_disconnect_ends_the_users_connections():
    user = unique("py")
    async with Clients() as cl:
        c = await cl.connect(tenant_token(user))
        bystander = await cl.connect(tenant_token(unique("py")))
        await call(CENT.disconnect, DisconnectRequest(user=user))
        (ctx,) = await c.rec.until("disconnected", 1, "the forced disconnect")
        assert ctx.code == 3503, ctx
        await asyncio.sleep(1.0)
        assert c.state == ClientState.DISCONNECTED, "3503 does not reconnect"
        assert bystander.state == ClientState.CONNECTED
        assert not bystander.rec.all("disconnected")


@run_async
async def test_presence_and_presence_stats():
    channel = f"tenant:123:{unique('presence')}"
    alice, bob = unique("alice"), unique("bob")
    async with Clients() as cl:
        a = await cl.connect(tenant_token(alice, info={"name": "Alice"}))
        b = await cl.connect(tenant_token(bob, info={"name": "Bob"}))
        await subscribe(a, channel, **FULL)
        await subscribe(b, channel, **FULL)
        presence = (await call(CENT.presence, PresenceRequest(channel=channel))).presence
        assert set(presence) == {a.client_id, b.client_id}
        assert (presence[a.client_id].client, presence[a.client_id].user) == (a.client_id, alice)
        assert presence[a.client_id].conn_info == {"name": "Alice"}
        assert (presence[b.client_id].user, presence[b.client_id].conn_info) == (bob, {"name": "Bob"})
        stats = await call(CENT.presence_stats, PresenceStatsRequest(channel=channel))
        assert (stats.num_clients, stats.num_users) == (2, 2)

        await b.disconnect()

        def one_left():
            s = CENT.presence_stats(PresenceStatsRequest(channel=channel))
            return s if s.num_clients == 1 else None

        stats = await asyncio.to_thread(wait_for, "presence_stats after a disconnect", one_left)
        assert stats.num_users == 1
        presence = (await call(CENT.presence, PresenceRequest(channel=channel))).presence
        assert list(presence) == [a.client_id]


@run_async
async def test_history_limit_since_reverse():
    channel = f"tenant:123:{unique('history')}"
    sent = [{"step": i} for i in range(1, 6)]
    results = [await call(CENT.publish, PublishRequest(channel=channel, data=d)) for d in sent]
    assert offsets(results) == [1, 2, 3, 4, 5]
    epoch = results[0].epoch
    assert epoch and all(r.epoch == epoch for r in results), results

    async def history(**kw):
        return await call(CENT.history, HistoryRequest(channel=channel, **kw))

    h = await history(limit=100)
    assert (h.offset, h.epoch) == (5, epoch)
    assert offsets(h.publications) == [1, 2, 3, 4, 5]
    assert [p.data for p in h.publications] == sent
    assert offsets((await history(limit=2)).publications) == [1, 2]
    assert offsets((await history(limit=2, reverse=True)).publications) == [5, 4]
    since = CentPosition(offset=2, epoch=epoch)
    assert offsets((await history(limit=100, since=since)).publications) == [3, 4, 5]
    assert offsets((await history(limit=1, since=since)).publications) == [3]
    # Reverse from a position: the publications before it, newest first.
    assert offsets((await history(limit=2, reverse=True, since=CentPosition(offset=4, epoch=epoch))).publications) == [3, 2]
    # Without a limit: the stream position only.
    position = await history()
    assert (position.publications, position.offset, position.epoch) == ([], 5, epoch)


@run_async
async def test_history_remove_keeps_the_position_and_epoch():
    """history_remove empties the history but not the stream: the top offset and the epoch stay,
    the next publication continues the numbering (Centrifugo's memory and Redis engines do the
    same), and a client that missed removed publications is told it could not recover."""
    channel = f"tenant:123:{unique('removed')}"
    async with Clients() as cl:
        c = await cl.connect(tenant_token(unique("py")))
        sub = await subscribe(c, channel, **FULL)
        results = [await call(CENT.publish, PublishRequest(channel=channel, data={"i": i})) for i in (1, 2, 3)]
        epoch = results[0].epoch
        await sub.rec.until("publication", 3, "the first three publications")

        await c.disconnect()
        missed = await call(CENT.publish, PublishRequest(channel=channel, data={"i": 4}))
        assert missed.offset == 4
        await call(CENT.history_remove, HistoryRemoveRequest(channel=channel))
        h = await call(CENT.history, HistoryRequest(channel=channel, limit=100))
        assert (h.publications, h.offset, h.epoch) == ([], 4, epoch)

        after = await call(CENT.publish, PublishRequest(channel=channel, data={"i": 5}))
        assert (after.offset, after.epoch) == (5, epoch)
        h = await call(CENT.history, HistoryRequest(channel=channel, limit=100))
        assert offsets(h.publications) == [5]

        # Offset 4 is gone: recovering from 3 can not succeed.
        await asyncio.wait_for(c.connect(), WAIT)
        await c.ready(timeout=WAIT)
        (_, resubscribed) = await sub.rec.until("subscribed", 2, "the resubscribe")
        assert (resubscribed.was_recovering, resubscribed.recovered) == (True, False), resubscribed
        assert resubscribed.stream_position.epoch == epoch


@run_async
async def test_channels_with_pattern():
    prefix = unique("chans")
    wanted = [f"tenant:123:{prefix}_a", f"tenant:123:{prefix}_b"]
    other = f"tenant:123:{unique('elsewhere')}"
    async with Clients() as cl:
        c1 = await cl.connect(tenant_token(unique("py")))
        c2 = await cl.connect(tenant_token(unique("py")))
        for ch in [*wanted, other]:
            await subscribe(c1, ch)
        await subscribe(c2, wanted[0])
        result = await call(CENT.channels, ChannelsRequest(pattern=f"tenant:123:{prefix}_*"))
        assert set(result.channels) == set(wanted), result
        assert result.channels[wanted[0]].num_clients == 2
        assert result.channels[wanted[1]].num_clients == 1
        everything = await call(CENT.channels, ChannelsRequest())
        assert {*wanted, other} <= set(everything.channels), everything


@run_async
async def test_info():
    async with Clients() as cl:
        await cl.connect(tenant_token(unique("py")))
        info = await call(CENT.info, InfoRequest())
        assert info.nodes, info
        node = info.nodes[0]
        assert node.uid and node.name, node
        assert sum(n.num_clients for n in info.nodes) >= 1, info


def test_batch():
    channel = f"tenant:123:{unique('batch')}"
    result = CENT.batch(BatchRequest(requests=[
        PublishRequest(channel=channel, data={"n": 1}),
        PublishRequest(channel=channel, data={"n": 2}),
        HistoryRequest(channel=channel, limit=10),
    ]))
    first, second, history = result.replies
    assert (first.offset, second.offset) == (1, 2), result
    assert first.epoch and first.epoch == second.epoch
    assert [(p.offset, p.data) for p in history.publications] == [(1, {"n": 1}), (2, {"n": 2})]


def test_api_keys_and_errors():
    request = PublishRequest(channel=f"tenant:123:{unique('auth')}", data={"n": 1})
    for key in ("not-the-key", ""):
        with pytest.raises(CentUnauthorizedError):
            CentClient(f"{HTTP}/api", api_key=key, timeout=WAIT).publish(request)

    # The key also goes in `Authorization: apikey KEY`.
    body = {"channel": request.channel, "data": {"n": 2}}
    r = requests.post(f"{HTTP}/api/publish", json=body, headers={"Authorization": f"apikey {API_KEY}"}, timeout=WAIT)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["offset"] == 1, r.text
    r = requests.post(f"{HTTP}/api/publish", json=body, headers={"Authorization": "apikey wrong"}, timeout=WAIT)
    assert r.status_code == 401, r.text

    # A command error is HTTP 200 with an error object.
    r = requests.post(f"{HTTP}/api/publish", json={"channel": f"nonexistent:{unique('x')}", "data": {}},
                      headers={"X-API-Key": API_KEY}, timeout=WAIT)
    assert r.status_code == 200, r.text
    assert r.json()["error"]["code"] == 102, r.text
    with pytest.raises(CentApiResponseError) as e:
        CENT.publish(PublishRequest(channel=f"nonexistent:{unique('x')}", data={}))
    assert e.value.code == 102


# --- centrifuge-python ---------------------------------------------------------------------------


@run_async
async def test_client_subscribes_receives_and_publishes():
    channel = f"tenant:123:{unique('py-deployments')}"
    alice, bob = unique("alice"), unique("bob")
    async with Clients() as cl:
        a = await cl.connect(tenant_token(alice, info={"name": "Alice"}))
        b = await cl.connect(tenant_token(bob))
        sa = await subscribe(a, channel, **FULL)
        sb = await subscribe(b, channel, **FULL)
        (subscribed,) = sa.rec.all("subscribed")
        assert (subscribed.recoverable, subscribed.positioned, subscribed.was_recovering) == (True, True, False)
        epoch = subscribed.stream_position.epoch
        assert epoch and subscribed.stream_position.offset == 0

        # bob's join reaches alice.
        (join,) = await sa.rec.until("join", 1, "bob's join", pred=lambda j: j.info.user == bob)
        assert join.info.client == b.client_id

        sent = [{"type": "deployment_start", "deploymentId": "deploy-456"},
                {"type": "deployment_progress", "progress": 50},
                {"type": "deployment_complete", "url": "https://odoo-tenant123.neo-stack.com"}]
        for data in sent:
            await call(CENT.publish, PublishRequest(channel=channel, data=data))
        pubs = await sa.rec.until("publication", 3, "three server API publications")
        assert [(p.pub.offset, p.pub.data, p.pub.info) for p in pubs] == [(i + 1, d, None) for i, d in enumerate(sent)]

        await asyncio.wait_for(sa.publish({"type": "chat", "text": "approved"}), WAIT)
        for s in (sa, sb):
            pubs = await s.rec.until("publication", 4, "the client publication")
            pub = pubs[3].pub
            assert (pub.offset, pub.data) == (4, {"type": "chat", "text": "approved"})
            assert pub.info is not None, pub
            assert (pub.info.user, pub.info.client, pub.info.conn_info) == (alice, a.client_id, {"name": "Alice"})

        h = await sb.history(limit=10)
        assert (offsets(h.publications), h.offset, h.epoch) == ([1, 2, 3, 4], 4, epoch)
        h = await sb.history(limit=10, since=StreamPosition(offset=2, epoch=epoch))
        assert offsets(h.publications) == [3, 4]
        h = await sb.history(limit=1, reverse=True)
        assert offsets(h.publications) == [4]

        presence = await sb.presence()
        assert set(presence.clients) == {a.client_id, b.client_id}
        assert presence.clients[a.client_id].conn_info == {"name": "Alice"}
        stats = await sb.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)

        rpc = await reply_error(a.rpc("getDeployments", {}), "rpc")
        assert rpc.code == 104

        await sb.unsubscribe()
        (leave,) = await sa.rec.until("leave", 1, "bob's leave", pred=lambda x: x.info.user == bob)
        assert leave.info.client == b.client_id


@run_async
async def test_client_tenant_isolation():
    async with Clients() as cl:
        c = await cl.connect(tenant_token(unique("py")))
        for channel in ("tenant:456:deployments", "admin:alerts", "admin:metrics"):
            ctx = await subscribe_refused(c, channel)
            assert ctx.code == 103, (channel, ctx)
        foreign = "tenant:456:deployments"
        assert (await reply_error(c.publish(foreign, {"x": 1}), "publish to tenant 456")).code == 103
        assert (await reply_error(c.history(foreign, limit=10), "history of tenant 456")).code == 103
        assert (await reply_error(c.presence(foreign), "presence of tenant 456")).code == 103
        assert (await reply_error(c.presence_stats(foreign), "presence_stats of tenant 456")).code == 103
        unknown = await subscribe_refused(c, f"nonexistent:{unique('x')}")
        assert unknown.code == 102, unknown
        assert c.state == ClientState.CONNECTED, "refusals do not end the connection"
        await subscribe(c, "tenant:123:deployments", **FULL)

        admin = await cl.connect(admin_token(unique("admin")))
        alerts = await subscribe(admin, "admin:alerts", **FULL)
        await subscribe(admin, "tenant:456:billing", **FULL)
        await call(CENT.publish, PublishRequest(channel="admin:alerts", data={"severity": "critical"}))
        (pub,) = await alerts.rec.until("publication", 1, "the alert")
        assert pub.pub.data == {"severity": "critical"}


@run_async
async def test_rate_limit_111_then_disconnect_3013(rate_limited_herald):
    server = rate_limited_herald
    channel = f"tenant:123:{unique('limited')}"
    async with Clients() as cl:
        c = await cl.connect(tenant_token(unique("py-limited")), base=server.http)
        sub = await subscribe(c, channel)  # command 1
        for i in range(4):  # commands 2..5
            await asyncio.wait_for(sub.publish({"i": i}), WAIT)
        for i in range(5):  # commands 6..10: over the limit, not yet twice over
            err = await reply_error(sub.publish({"over": i}), f"command {6 + i} of 5 allowed")
            assert err.code == 111, err
        assert c.state == ClientState.CONNECTED
        assert [x.code for x in c.rec.all("connecting")] == [0], "111 does not disconnect"
        h = await call(server.cent.history, HistoryRequest(channel=channel, limit=100))
        assert offsets(h.publications) == [1, 2, 3, 4], "refused publications were not published"

        # Past twice the limit: the server disconnects with 3013 (the client reconnects after it).
        outcomes = []
        for i in range(3):
            if c.rec.all("connecting", lambda x: x.code == 3013):
                break
            try:
                await asyncio.wait_for(c.publish(channel, {"more": i}), WAIT)
                outcomes.append("published")
            except ReplyError as e:
                outcomes.append(e.code)
            except (ClientDisconnectedError, OperationTimeoutError, asyncio.TimeoutError) as e:
                outcomes.append(type(e).__name__)
        await c.rec.until("connecting", 1, f"the disconnect with 3013 (outcomes: {outcomes})",
                          pred=lambda x: x.code == 3013)
        assert "published" not in outcomes, outcomes


def _sse_pushes(resp, out):
    """Reads an SSE stream, putting each event's data (parsed JSON) or the exception that ended
    the stream on `out`."""
    try:
        buffer = b""
        data_lines = []
        # One byte at a time: a larger read may wait for more than the server has sent (without
        # chunked encoding urllib3 reads until the size or the end), and the stream is small.
        for chunk in resp.iter_content(chunk_size=1):
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode()
                if line == "":
                    if data_lines:
                        out.put(json.loads("\n".join(data_lines)))
                        data_lines = []
                elif line.startswith("data:"):
                    data_lines.append(line[5:].removeprefix(" "))
        out.put(EOFError("the SSE stream ended"))
    except Exception as e:
        out.put(e)


def _next_push(pushes, what):
    """The next SSE push other than a ping ({})."""
    deadline = time.monotonic() + WAIT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {WAIT}s waiting for {what}")
        try:
            push = pushes.get(timeout=remaining)
        except queue.Empty:
            continue
        if isinstance(push, Exception):
            raise AssertionError(f"waiting for {what}: {push!r}")
        if push != {}:
            return push


def test_uni_sse_connect_push_then_publications():
    user = unique("py-sse")
    channel = f"tenant:123:{unique('sse')}"
    token = tenant_token(user, channels=[channel])
    url = f"{HTTP}/connection/uni_sse?" + urllib.parse.urlencode({"cf_connect": json.dumps({"token": token})})
    resp = requests.get(url, stream=True, timeout=(WAIT, 3 * WAIT))
    try:
        assert resp.status_code == 200, resp.text
        assert resp.headers.get("Content-Type", "").startswith("text/event-stream"), resp.headers
        pushes = queue.Queue()
        threading.Thread(target=_sse_pushes, args=(resp, pushes), daemon=True).start()

        first = _next_push(pushes, "the connect push")
        assert "connect" in first, first
        assert first["connect"].get("client"), first
        assert channel in first["connect"].get("subs", {}), first

        for n in (1, 2):
            result = CENT.publish(PublishRequest(channel=channel, data={"n": n}))
            push = _next_push(pushes, f"publication {n}")
            assert push.get("channel") == channel, push
            assert (push["pub"]["data"], push["pub"]["offset"]) == ({"n": n}, result.offset), push

        # A server API subscribe adds a channel to the stream.
        extra = f"tenant:123:{unique('sse-extra')}"
        CENT.subscribe(SubscribeRequest(user=user, channel=extra))
        push = _next_push(pushes, "the subscribe push")
        assert (push.get("channel"), "subscribe" in push) == (extra, True), push
        result = CENT.publish(PublishRequest(channel=extra, data={"extra": True}))
        push = _next_push(pushes, "the publication of the added channel")
        assert push.get("channel") == extra, push
        assert (push["pub"]["data"], push["pub"]["offset"]) == ({"extra": True}, result.offset), push
    finally:
        resp.close()


def test_bearer_jwt_on_the_seed_endpoints():
    event = {"type": "deployment_start", "data": {"deploymentId": "deploy-456"}}
    own = f"tenant:123:{unique('bearer')}"
    foreign = f"tenant:456:{unique('bearer')}"

    def post(token, channel):
        return requests.post(f"{HTTP}/api/events/publish", json={"channel": channel, "event": event},
                             headers={"Authorization": f"Bearer {token}"}, timeout=WAIT)

    def history(token, channel):
        return requests.get(f"{HTTP}/api/events/history/{channel}?limit=50",
                            headers={"Authorization": f"Bearer {token}"}, timeout=WAIT)

    tenant = tenant_token(unique("py"))
    r = post(tenant, foreign)
    assert r.status_code == 403, r.text
    assert history(tenant, foreign).status_code == 403
    top = CENT.history(HistoryRequest(channel=foreign))
    assert top.offset == 0, "a refused publish published nothing"

    r = post(tenant, own)
    assert r.status_code == 200, r.text
    assert (r.json()["success"], r.json()["channel"], r.json()["offset"]) == (True, own, 1), r.text
    h = history(tenant, own)
    assert h.status_code == 200, h.text
    assert [p["offset"] for p in h.json()["publications"]] == [1], h.text

    admin = admin_token(unique("admin"))
    r = post(admin, foreign)
    assert r.status_code == 200, r.text
    assert history(admin, foreign).status_code == 200

    forged = mint({"sub": unique("py"), "tenant_id": 456}, secret="not-the-server-secret-" * 3)
    assert post(forged, foreign).status_code == 401


def _envelope(event_type, tenant="123", service="shopify", **data):
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "tenant_id": tenant,
        "service": service,
        "timestamp": iso_now(),
        "version": "1.0",
        "data": data,
    }


@run_async
async def test_route_publishes_produced_records(routed_herald):
    from kafka import KafkaProducer  # the Kafka suites' client, in the same virtualenv

    server = routed_herald
    routed = [
        _envelope("order_created", order_id=1001, total=199.9),
        _envelope("order_created", order_id=1002, total=10),
        _envelope("order_paid", order_id=1001),
    ]
    unrouted = [
        _envelope("order_created", service="chatwoot", order_id=1),  # another service
        _envelope("order_created", tenant="456", order_id=2),  # another tenant's channel
        _envelope("customer_created", customer_id=3),  # not order_*
    ]
    async with Clients() as cl:
        c = await cl.connect(tenant_token(unique("py-orders")), base=server.http)
        sub = await subscribe(c, "tenant:123:orders", **FULL)

        def post(envelope):
            r = requests.post(f"{server.http}/v1/events", data=json.dumps(envelope),
                              headers={"X-API-Key": server.key, "Content-Type": "application/json"}, timeout=WAIT)
            assert r.status_code in (200, 201), r.text

        for envelope in routed + unrouted:
            await asyncio.to_thread(post, envelope)

        # A record produced over Kafka is routed too.
        kafka_record = _envelope("order_cancelled", order_id=1002)

        def produce():
            producer = KafkaProducer(bootstrap_servers=server.kafka)
            try:
                producer.send("smarteros.123.shopify.order_cancelled", json.dumps(kafka_record).encode(),
                              key=kafka_record["event_id"].encode()).get(timeout=15)
            finally:
                producer.close()

        await asyncio.to_thread(produce)
        expected = [*routed, kafka_record]

        await sub.rec.until("publication", len(expected), "the routed records")
        await asyncio.sleep(SETTLE)
        pubs = [p.pub for p in sub.rec.all("publication")]
        # At least once: a repeat is allowed, a loss or a stray record is not.
        first = {}
        for p in pubs:
            first.setdefault(p.data["event_id"], p)
        assert set(first) == {e["event_id"] for e in expected}, pubs
        for envelope in expected:
            assert first[envelope["event_id"]].data == envelope, "the publication's data is the record's JSON value"
        # In order per topic, offsets contiguous in the channel.
        created = [p.data["event_id"] for p in pubs if p.data["event_type"] == "order_created"]
        assert list(dict.fromkeys(created)) == [e["event_id"] for e in routed[:2]]
        assert offsets(pubs) == list(range(1, len(pubs) + 1)), pubs

        # The other tenant's order went to that tenant's channel.
        h = await call(server.cent.history, HistoryRequest(channel="tenant:456:orders", limit=10))
        assert [p.data["event_id"] for p in h.publications] == [unrouted[1]["event_id"]], h

    # The config's namespace settings apply: tenant channels keep 100 publications here (the
    # default keeps 10).
    channel = f"tenant:123:{unique('sized')}"
    for i in range(12):
        server.cent.publish(PublishRequest(channel=channel, data={"i": i}))
    h = server.cent.history(HistoryRequest(channel=channel, limit=100))
    assert offsets(h.publications) == list(range(1, 13))
