//! The real-time gateway, driven over real WebSockets against the real binary: tenant
//! isolation, token failures, protocol violations, rate limits, slow clients, and recovery
//! across a restart. (The Centrifugo client libraries themselves are exercised by compat/.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Server;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "realtime-test-secret-0123456789abcdef";
const KEY: &str = "realtime-test-admin-key-0123456789";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn user_token(user: &str, tenant: &str, roles: &[&str]) -> String {
    token(json!({"sub": user, "tenant_id": tenant, "roles": roles, "exp": now() + 3600}))
}

fn start(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Server {
    let mut env = vec![("HERALD_JWT_SECRET", SECRET), ("HERALD_ADMIN_API_KEY", KEY)];
    env.extend_from_slice(extra_env);
    Server::start(dir, &[], &env)
}

async fn connect(server: &Server, tok: &str) -> (Ws, Value) {
    let url = server.url.replace("http://", "ws://") + "/connection/websocket";
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    send(&mut ws, json!({"id": 1, "connect": {"token": tok}})).await;
    let reply = next_json(&mut ws).await;
    (ws, reply)
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next protocol message; frames carrying several are split. Pings (`{}`) are skipped.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended")
            .expect("websocket error");
        if let Message::Text(t) = msg {
            let first = t.as_str().split('\n').next().unwrap_or("").to_owned();
            let v: Value = serde_json::from_str(&first).unwrap();
            if v != json!({}) {
                return v;
            }
        } else if let Message::Close(frame) = msg {
            panic!("unexpected close: {frame:?}");
        }
    }
}

async fn call(ws: &mut Ws, id: u32, method: &str, params: Value) -> Value {
    let mut cmd = json!({"id": id});
    cmd[method] = params;
    send(ws, cmd).await;
    loop {
        let v = next_json(ws).await;
        if v["id"] == json!(id) {
            return v;
        }
    }
}

/// Reads until the server closes; returns the close code.
async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return u16::from(f.code),
            Ok(Some(Ok(Message::Close(None)))) => return 1005,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("websocket error before close: {e}"),
            Ok(None) => panic!("closed without a close frame"),
            Err(_) => panic!("no close within 20 s"),
        }
    }
}

async fn api(server: &Server, method: &str, params: Value) -> Value {
    let r = server
        .client()
        .post(format!("{}/api/{method}", server.url))
        .header("X-API-Key", KEY)
        .json(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{method}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn tenants_only_reach_their_own_channels() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let (mut ws, reply) = connect(&server, &user_token("alice", "123", &[])).await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");

    let denied = [
        (
            "subscribe",
            json!({"channel": "tenant:456:deployments"}),
            103,
        ),
        ("subscribe", json!({"channel": "admin:alerts"}), 103),
        (
            "history",
            json!({"channel": "tenant:456:deployments", "limit": 10}),
            103,
        ),
        (
            "presence",
            json!({"channel": "tenant:456:deployments"}),
            103,
        ),
        (
            "presence_stats",
            json!({"channel": "tenant:456:deployments"}),
            103,
        ),
        (
            "publish",
            json!({"channel": "tenant:456:deployments", "data": {}}),
            103,
        ),
        // Not subscribed: the namespace lets only subscribers publish.
        (
            "publish",
            json!({"channel": "tenant:123:deployments", "data": {}}),
            103,
        ),
        ("subscribe", json!({"channel": "nowhere:x"}), 102),
        ("subscribe", json!({"channel": "tenant:1.2:x"}), 102),
        ("rpc", json!({"method": "anything"}), 104),
    ];
    for (i, (method, params, code)) in denied.iter().enumerate() {
        let r = call(&mut ws, 10 + i as u32, method, params.clone()).await;
        assert_eq!(r["error"]["code"], json!(code), "{method} {params}: {r}");
    }
    // system:* is readable by everyone but written only through the server API.
    let r = call(
        &mut ws,
        30,
        "subscribe",
        json!({"channel": "system:announcements"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = call(
        &mut ws,
        31,
        "publish",
        json!({"channel": "system:announcements", "data": {"x": 1}}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = api(
        &server,
        "publish",
        json!({"channel": "system:announcements", "data": {"maintenance": true}}),
    )
    .await;
    assert_eq!(r["result"]["offset"], 1, "{r}");
    let push = next_json(&mut ws).await;
    assert_eq!(push["push"]["channel"], "system:announcements");
    assert_eq!(push["push"]["pub"]["data"]["maintenance"], true);

    // Own channel: subscribe, publish, history, presence.
    let r = call(
        &mut ws,
        40,
        "subscribe",
        json!({"channel": "tenant:123:deployments", "recoverable": true}),
    )
    .await;
    assert_eq!(r["subscribe"]["recoverable"], true, "{r}");
    let r = call(
        &mut ws,
        41,
        "publish",
        json!({"channel": "tenant:123:deployments", "data": {"type": "deployment_start"}}),
    )
    .await;
    assert_eq!(r["publish"], json!({}), "{r}");
    let push = next_json(&mut ws).await;
    assert_eq!(push["push"]["pub"]["offset"], 1, "{push}");
    assert_eq!(push["push"]["pub"]["info"]["user"], "alice");
    let r = call(
        &mut ws,
        42,
        "presence_stats",
        json!({"channel": "tenant:123:deployments"}),
    )
    .await;
    assert_eq!(
        r["presence_stats"],
        json!({"num_clients": 1, "num_users": 1})
    );

    // An admin may use admin:* and any tenant's channels.
    let (mut admin, _) = connect(&server, &user_token("root", "999", &["admin"])).await;
    for (i, ch) in ["admin:alerts", "tenant:456:deployments"]
        .iter()
        .enumerate()
    {
        let r = call(
            &mut admin,
            50 + i as u32,
            "subscribe",
            json!({"channel": ch}),
        )
        .await;
        assert!(r.get("error").is_none(), "{ch}: {r}");
    }

    let metrics = server
        .client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("auth_failures_total{interface=\"websocket\",reason=\"tenant_isolation\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("active_connections 2"), "{metrics}");
    server.stop();
}

#[tokio::test]
async fn bad_tokens_and_protocol_violations_close_with_centrifugo_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);

    let expired = token(json!({"sub": "u", "tenant_id": "1", "exp": now() - 10}));
    let (mut ws, reply) = connect(&server, &expired).await;
    assert_eq!(reply["error"]["code"], 109, "{reply}");
    drop(ws.close(None).await);

    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u", "tenant_id": "1"}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    let (mut ws, reply) = connect(&server, &forged).await;
    assert_eq!(reply["error"]["code"], 101, "{reply}");
    assert_eq!(close_code(&mut ws).await, 3500);

    // alg "none" is never accepted.
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(r#"{"sub":"u","tenant_id":"1"}"#)
    );
    let (mut ws, reply) = connect(&server, &none).await;
    assert_eq!(reply["error"]["code"], 101, "{reply}");
    assert_eq!(close_code(&mut ws).await, 3500);

    // A command before connect, and a frame that is not JSON.
    let url = server.url.replace("http://", "ws://") + "/connection/websocket";
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    send(
        &mut ws,
        json!({"id": 1, "subscribe": {"channel": "system:x"}}),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, 3501);
    let (mut ws, _) = connect(&server, &user_token("u", "1", &[])).await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 3501);

    // Protobuf is refused before the upgrade.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "centrifuge-protobuf".parse().unwrap(),
    );
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
    server.stop();
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn commands_past_the_rate_limit_fail_then_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[("HERALD_RATE_LIMIT_MAX_REQUESTS", "3")]);
    let (mut ws, _) = connect(&server, &user_token("busy", "7", &[])).await;
    let r = call(&mut ws, 2, "subscribe", json!({"channel": "system:x"})).await;
    assert!(r.get("error").is_none(), "{r}");
    for i in 1..3 {
        let r = call(
            &mut ws,
            10 + i,
            "presence_stats",
            json!({"channel": "system:x"}),
        )
        .await;
        assert!(r.get("error").is_none(), "request {i}: {r}");
    }
    for i in 3..6 {
        let r = call(
            &mut ws,
            10 + i,
            "presence_stats",
            json!({"channel": "system:x"}),
        )
        .await;
        assert_eq!(r["error"]["code"], 111, "request {i}: {r}");
        assert_eq!(r["error"]["temporary"], true);
    }
    send(
        &mut ws,
        json!({"id": 99, "presence_stats": {"channel": "system:x"}}),
    )
    .await;
    assert_eq!(close_code(&mut ws).await, 3013);
    server.stop();
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected_as_slow() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let (mut ws, _) = connect(&server, &user_token("sleepy", "5", &[])).await;
    let r = call(&mut ws, 2, "subscribe", json!({"channel": "tenant:5:feed"})).await;
    assert!(r.get("error").is_none(), "{r}");
    // The client stops reading; publications without history fill the socket buffers and
    // then its bounded queue.
    let blob = "x".repeat(60_000);
    let mut slow = false;
    for _ in 0..2000 {
        api(
            &server,
            "publish",
            json!({"channel": "tenant:5:feed", "data": {"blob": blob}, "skip_history": true}),
        )
        .await;
        let summary: Value = server
            .client()
            .get(format!("{}/api/metrics/summary", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if summary["slow_disconnects"] == 1 {
            slow = true;
            break;
        }
    }
    assert!(slow, "the client was never disconnected as slow");
    assert_eq!(close_code(&mut ws).await, 3008);
    server.stop();
}

#[tokio::test]
async fn recovery_returns_exactly_the_missed_publications_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let tok = user_token("bob", "42", &[]);
    let (mut ws, _) = connect(&server, &tok).await;
    let r = call(
        &mut ws,
        2,
        "subscribe",
        json!({"channel": "tenant:42:deployments", "recoverable": true, "positioned": true}),
    )
    .await;
    let epoch = r["subscribe"]["epoch"].as_str().unwrap().to_owned();
    for i in 0..2 {
        api(
            &server,
            "publish",
            json!({"channel": "tenant:42:deployments", "data": {"n": i}}),
        )
        .await;
    }
    let mut seen = 0;
    for _ in 0..2 {
        seen = next_json(&mut ws).await["push"]["pub"]["offset"]
            .as_u64()
            .unwrap();
    }
    assert_eq!(seen, 2);
    drop(ws);
    server.stop();

    let server = start(dir.path(), &[]);
    for i in 2..5 {
        let r = api(
            &server,
            "publish",
            json!({"channel": "tenant:42:deployments", "data": {"n": i}, "idempotency_key": format!("k{i}")}),
        )
        .await;
        assert_eq!(
            r["result"]["epoch"],
            json!(epoch),
            "the epoch survives restarts"
        );
    }
    // A retried publish with the same idempotency key is stored once.
    let again = api(
        &server,
        "publish",
        json!({"channel": "tenant:42:deployments", "data": {"n": 4}, "idempotency_key": "k4"}),
    )
    .await;
    assert_eq!(again["result"]["offset"], 5, "{again}");

    let (mut ws, _) = connect(&server, &tok).await;
    let r = call(
        &mut ws,
        2,
        "subscribe",
        json!({"channel": "tenant:42:deployments", "recover": true, "recoverable": true,
               "offset": seen, "epoch": epoch}),
    )
    .await;
    let sub = &r["subscribe"];
    assert_eq!(sub["recovered"], true, "{r}");
    assert_eq!(sub["was_recovering"], true);
    assert_eq!(sub["epoch"], json!(epoch));
    let got: Vec<(u64, i64)> = sub["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["offset"].as_u64().unwrap(),
                p["data"]["n"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![(3, 2), (4, 3), (5, 4)]);

    // A position from another epoch cannot be recovered.
    let r = call(
        &mut ws,
        3,
        "subscribe",
        json!({"channel": "tenant:42:other", "recover": true, "recoverable": true,
               "offset": 1, "epoch": "nope"}),
    )
    .await;
    assert_eq!(r["subscribe"]["recovered"], json!(null), "{r}");
    assert_eq!(r["subscribe"]["was_recovering"], true, "{r}");
    server.stop();
}

#[tokio::test]
async fn connections_expire_unless_refreshed() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let short = |user: &str| token(json!({"sub": user, "tenant_id": "3", "exp": now() + 2}));
    // Refreshed before expiry: the connection lives on with the new expiry.
    let (mut ws, reply) = connect(&server, &short("fresh")).await;
    assert_eq!(reply["connect"]["expires"], true, "{reply}");
    let r = call(
        &mut ws,
        2,
        "refresh",
        json!({"token": user_token("fresh", "3", &[])}),
    )
    .await;
    assert_eq!(r["refresh"]["expires"], true, "{r}");
    assert!(r["refresh"]["ttl"].as_u64().unwrap() > 3000, "{r}");
    // A refresh for another user is refused with 3500.
    let (mut other, _) = connect(&server, &short("mallory")).await;
    send(
        &mut other,
        json!({"id": 2, "refresh": {"token": user_token("someone-else", "3", &[])}}),
    )
    .await;
    assert_eq!(close_code(&mut other).await, 3500);
    // Not refreshed: closed with 3005 once the token's exp passes.
    let (mut stale, _) = connect(&server, &short("stale")).await;
    assert_eq!(close_code(&mut stale).await, 3005);
    // The refreshed one is still connected and working.
    let r = call(
        &mut ws,
        3,
        "presence_stats",
        json!({"channel": "tenant:3:x"}),
    )
    .await;
    assert_eq!(
        r["error"]["code"], 103,
        "alive, and still held to the namespace rules: {r}"
    );
    server.stop();
}

#[tokio::test]
async fn extreme_values_from_clients_are_answered_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let far = token(json!({"sub": "far", "tenant_id": "8", "exp": i64::MAX}));
    let (mut ws, reply) = connect(&server, &far).await;
    assert_eq!(reply["connect"]["expires"], true, "{reply}");
    assert!(
        reply["connect"]["ttl"].as_u64().unwrap() > 1_000_000,
        "{reply}"
    );
    let r = call(&mut ws, 2, "subscribe", json!({"channel": "tenant:8:x"})).await;
    assert!(r.get("error").is_none(), "{r}");
    api(
        &server,
        "publish",
        json!({"channel": "tenant:8:x", "data": {"n": 1}}),
    )
    .await;
    for (i, since) in [u64::MAX, u64::MAX - 1, 0].into_iter().enumerate() {
        for reverse in [false, true] {
            let r = call(
                &mut ws,
                10 + 2 * i as u32 + u32::from(reverse),
                "history",
                json!({"channel": "tenant:8:x", "limit": i32::MAX,
                       "since": {"offset": since, "epoch": ""}, "reverse": reverse}),
            )
            .await;
            assert!(
                r["history"]["offset"].as_u64().is_some(),
                "{since} {reverse}: {r}"
            );
        }
    }
    let r = call(
        &mut ws,
        30,
        "subscribe",
        json!({"channel": "tenant:8:y", "recover": true, "recoverable": true,
               "offset": u64::MAX, "epoch": ""}),
    )
    .await;
    assert_eq!(r["subscribe"]["was_recovering"], true, "{r}");
    server.stop();
}

#[tokio::test]
async fn subscription_tokens_and_sub_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let sub_token = |user: &str, channel: &str, exp: i64| {
        token(json!({"sub": user, "channel": channel, "exp": exp}))
    };
    let (mut ws, _) = connect(&server, &user_token("u", "3", &[])).await;
    let ch = "tenant:3:private";
    for (id, channel, tok, code) in [
        (2, ch, sub_token("u", "tenant:3:other", now() + 60), 103),
        (3, ch, sub_token("someone-else", ch, now() + 60), 103),
        (4, ch, sub_token("u", ch, now() - 10), 109),
        // A subscription token cannot cross tenants either.
        (
            5,
            "tenant:4:private",
            sub_token("u", "tenant:4:private", now() + 60),
            103,
        ),
    ] {
        let r = call(
            &mut ws,
            id,
            "subscribe",
            json!({"channel": channel, "token": tok}),
        )
        .await;
        assert_eq!(r["error"]["code"], code, "{id}: {r}");
    }
    let r = call(
        &mut ws,
        6,
        "subscribe",
        json!({"channel": ch, "token": sub_token("u", ch, now() + 60)}),
    )
    .await;
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    assert!(r["subscribe"]["ttl"].as_u64().unwrap() <= 60, "{r}");
    let r = call(
        &mut ws,
        7,
        "sub_refresh",
        json!({"channel": ch, "token": sub_token("u", ch, now() + 3600)}),
    )
    .await;
    assert!(r["sub_refresh"]["ttl"].as_u64().unwrap() > 60, "{r}");
    let r = call(
        &mut ws,
        8,
        "sub_refresh",
        json!({"channel": ch, "token": sub_token("u", "tenant:3:other", now() + 3600)}),
    )
    .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    server.stop();
}

#[tokio::test]
async fn the_tenant_limit_is_shared_by_its_users_and_overridable_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[realtime.rate_limits]\nmax_requests = 100\ntenant_max_requests = 4\n\
         [realtime.rate_limits.tenants.11]\ntenant_max_requests = 1\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &["--config", config.to_str().unwrap()],
        &[("HERALD_JWT_SECRET", SECRET), ("HERALD_ADMIN_API_KEY", KEY)],
    );
    let (mut a, _) = connect(&server, &user_token("a", "9", &[])).await;
    let (mut b, _) = connect(&server, &user_token("b", "9", &[])).await;
    let (mut other, _) = connect(&server, &user_token("c", "10", &[])).await;
    for ws in [&mut a, &mut b] {
        for id in 2..4 {
            let r = call(
                ws,
                id,
                "subscribe",
                json!({"channel": format!("tenant:9:x{id}")}),
            )
            .await;
            assert!(r.get("error").is_none(), "{r}");
        }
    }
    let r = call(&mut b, 4, "subscribe", json!({"channel": "tenant:9:y"})).await;
    assert_eq!(r["error"]["code"], 111, "the tenant's fifth command: {r}");
    let r = call(
        &mut other,
        2,
        "subscribe",
        json!({"channel": "tenant:10:y"}),
    )
    .await;
    assert!(
        r.get("error").is_none(),
        "another tenant is not affected: {r}"
    );
    // A tenant with an override of its own: one command per window.
    let (mut small, _) = connect(&server, &user_token("d", "11", &[])).await;
    let r = call(
        &mut small,
        2,
        "subscribe",
        json!({"channel": "tenant:11:a"}),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = call(
        &mut small,
        3,
        "subscribe",
        json!({"channel": "tenant:11:b"}),
    )
    .await;
    assert_eq!(r["error"]["code"], 111, "the override applies: {r}");
    server.stop();
}
