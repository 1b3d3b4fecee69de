//! Tenants, API keys, ACLs, audit and quotas through the real binary: the CLI and the HTTP API.
//! (The Kafka and WebSocket sides of the isolation matrix run with real clients in
//! `compat/security`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::Server;
use serde_json::{Value, json};

const ADMIN: &str = "security-test-admin-key-0123456789";

fn tenant_create(server: &Server, id: &str) -> Value {
    let out = server.cli(&["tenant", "create", id, "--json"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn event(tenant: &str) -> String {
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": "order_created",
        "tenant_id": tenant,
        "service": "shopify",
        "data": {"order_id": 1}
    })
    .to_string()
}

async fn call(
    server: &Server,
    method: reqwest::Method,
    key: &str,
    path: &str,
    body: Option<String>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = server
        .client()
        .request(method, format!("{}{path}", server.url))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

#[tokio::test]
async fn tenant_keys_are_fenced_revocable_and_denials_are_audited() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[("HERALD_ADMIN_API_KEY", ADMIN)]);
    let a = tenant_create(&server, "76953480-3");
    let b = tenant_create(&server, "acme-2");
    assert_eq!(a["principal"], "User:tenant-76953480-3");
    assert!(a["password"].as_str().unwrap().len() >= 16);
    let ka = a["api_key"].as_str().unwrap().to_owned();
    let kb = b["api_key"].as_str().unwrap().to_owned();
    assert!(ka.starts_with("hk_"));
    // The seed's default ACLs, and nothing else.
    let ops: Vec<String> = a["acls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}:{}:{}", b["resource_type"], b["name"], b["operation"]))
        .collect();
    assert_eq!(ops.len(), 6, "{ops:?}");
    assert!(ops.contains(&"\"TOPIC\":\"smarteros.76953480-3.\":\"WRITE\"".to_owned()));

    // Each tenant publishes to its own topic; A cannot publish as B.
    let (s, _, _) = call(
        &server,
        Method::POST,
        &ka,
        "/v1/events",
        Some(event("76953480-3")),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = call(
        &server,
        Method::POST,
        &kb,
        "/v1/events",
        Some(event("acme-2")),
    )
    .await;
    assert_eq!(s, 200);
    let (s, body, _) = call(
        &server,
        Method::POST,
        &ka,
        "/v1/events",
        Some(event("acme-2")),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    // Listings show only A's own topics.
    let (s, body, _) = call(&server, Method::GET, &ka, "/v1/topics", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["smarteros.76953480-3.shopify.order_created"]);

    // A foreign topic that exists and one that does not answer alike: no existence hint.
    let existing = call(
        &server,
        Method::GET,
        &ka,
        "/v1/topics/smarteros.acme-2.shopify.order_created/events?offset=0",
        None,
    )
    .await;
    let missing = call(
        &server,
        Method::GET,
        &ka,
        "/v1/topics/smarteros.acme-2.nothing.here/events?offset=0",
        None,
    )
    .await;
    assert_eq!(existing.0, 403);
    assert_eq!((existing.0, &existing.1), (missing.0, &missing.1));
    let (s, _, _) = call(
        &server,
        Method::GET,
        &ka,
        "/v1/topics/smarteros.76953480-3.shopify.order_created/events?offset=0",
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Administration is the admin's.
    for path in ["/v1/tenants", "/v1/acls", "/v1/users", "/v1/api-keys"] {
        let (s, _, _) = call(&server, Method::GET, &ka, path, None).await;
        assert_eq!(s, 403, "{path}");
    }

    // Revoked keys stop working at once.
    let (s, body, _) = call(
        &server,
        Method::POST,
        ADMIN,
        "/v1/api-keys",
        Some(json!({"tenant": "acme-2", "name": "short-lived"}).to_string()),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    let temp = body["key"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();
    let (s, _, _) = call(&server, Method::GET, &temp, "/v1/topics", None).await;
    assert_eq!(s, 200);
    let out = server.cli(&["api-key", "revoke", &id], None);
    assert!(out.status.success());
    let (s, _, _) = call(&server, Method::GET, &temp, "/v1/topics", None).await;
    assert_eq!(s, 401);
    // A key of the right shape with a wrong secret is refused too.
    let forged = format!("{}x", &kb[..kb.len() - 1]);
    let (s, _, _) = call(&server, Method::GET, &forged, "/v1/topics", None).await;
    assert_eq!(s, 401);

    // Denials are counted and recorded with principal, resource and operation.
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
        metrics.contains("auth_failures_total{interface=\"http\",reason=\"tenant_isolation\"}"),
        "{metrics}"
    );
    let mut audit = Vec::new();
    for _ in 0..50 {
        audit = common::read_all(&server, "_herald.audit.security", 0).await;
        if audit.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let denial = audit
        .iter()
        .map(|e| &e["value"])
        .find(|v| {
            v["operation"] == "WRITE"
                && v["resource"] == "Topic:smarteros.acme-2.shopify.order_created"
        })
        .unwrap_or_else(|| panic!("no audit record of the refused publish: {audit:?}"));
    assert_eq!(denial["principal"], "User:tenant-76953480-3");
    assert_eq!(denial["interface"], "http");
    assert_eq!(denial["reason"], "tenant_isolation");
    assert_eq!(denial["source"], "127.0.0.1");
    assert!(
        audit.iter().any(|e| e["value"]["reason"] == "invalid_key"),
        "{audit:?}"
    );

    // Everything survives a restart: tenants, keys, ACLs, revocations.
    server.stop();
    let server = Server::start(dir.path(), &[], &[("HERALD_ADMIN_API_KEY", ADMIN)]);
    let (s, _, _) = call(
        &server,
        Method::POST,
        &ka,
        "/v1/events",
        Some(event("76953480-3")),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, _) = call(
        &server,
        Method::POST,
        &ka,
        "/v1/events",
        Some(event("acme-2")),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _, _) = call(&server, Method::GET, &temp, "/v1/topics", None).await;
    assert_eq!(s, 401);
    let out = server.cli(&["tenant", "list"], None);
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("76953480-3") && list.contains("acme-2"),
        "{list}"
    );

    // Deleting a tenant removes its credentials, ACLs and keys, not its data.
    let out = server.cli(&["tenant", "delete", "acme-2"], None);
    assert!(out.status.success());
    let (s, _, _) = call(&server, Method::GET, &kb, "/v1/topics", None).await;
    assert_eq!(s, 401);
    let (s, body, _) = call(
        &server,
        Method::GET,
        ADMIN,
        "/v1/acls?principal=User:tenant-acme-2",
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body["acls"], json!([]));
    let (s, _, _) = call(
        &server,
        Method::GET,
        ADMIN,
        "/v1/topics/smarteros.acme-2.shopify.order_created",
        None,
    )
    .await;
    assert_eq!(s, 200);
    server.stop();
}

#[tokio::test]
async fn acls_are_managed_from_the_cli_and_refuse_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[], &[("HERALD_ADMIN_API_KEY", ADMIN)]);
    let out = server.cli(
        &[
            "acl",
            "create",
            "--principal",
            "User:service-api-gateway",
            "--operation",
            "READ,WRITE,DESCRIBE",
            "--topic",
            "smarteros.",
            "--prefixed",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created 3"));
    // MATCH lists what applies to one topic.
    let out = server.cli(
        &[
            "acl",
            "list",
            "--topic",
            "smarteros.76953480-3.shopify.order_created",
            "--pattern",
            "match",
            "--json",
        ],
        None,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["acls"].as_array().unwrap().len(), 3, "{v}");
    let out = server.cli(
        &[
            "acl",
            "list",
            "--topic",
            "other.topic",
            "--pattern",
            "match",
            "--json",
        ],
        None,
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["acls"], json!([]));
    // Bad input gets a clear error.
    let out = server.cli(
        &[
            "acl",
            "create",
            "--principal",
            "tenant-x",
            "--operation",
            "READ",
            "--topic",
            "t",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("User:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.cli(
        &[
            "acl",
            "create",
            "--principal",
            "User:x",
            "--operation",
            "FLY",
            "--topic",
            "t",
        ],
        None,
    );
    assert!(!out.status.success());
    let out = server.cli(&["acl", "delete"], None);
    assert!(!out.status.success());
    let out = server.cli(
        &["acl", "delete", "--principal", "User:service-api-gateway"],
        None,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 ACL(s) deleted"));
    let out = server.cli(&["tenant", "create", "bad.tenant"], None);
    assert!(!out.status.success());
    let out = server.cli(&["tenant", "create", "t1"], None);
    assert!(out.status.success());
    let out = server.cli(&["tenant", "create", "t1"], None);
    assert!(!out.status.success(), "a tenant is created once");
    server.stop();
}

#[tokio::test]
async fn request_quotas_answer_429_with_retry_after() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[quotas.defaults]\nhttp_request_rate = 1000\n[quotas.tenants.slow]\nhttp_request_rate = 2\n",
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    );
    let slow = tenant_create(&server, "slow");
    let fast = tenant_create(&server, "fast");
    let ks = slow["api_key"].as_str().unwrap();
    let kf = fast["api_key"].as_str().unwrap();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let (s, body, headers) = call(&server, Method::GET, ks, "/v1/topics", None).await;
        if s == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
            retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
        }
        statuses.push(s);
    }
    assert_eq!(&statuses[..2], [200, 200]);
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(retry_after.is_some_and(|s| s >= 1));
    // Another tenant has its own budget.
    for _ in 0..5 {
        let (s, _, _) = call(&server, Method::GET, kf, "/v1/topics", None).await;
        assert_eq!(s, 200);
    }
    server.stop();
}

/// The salt and iteration count SCRAM-SHA-256 answers for `user` on a SASL listener:
/// SaslHandshake, then the client-first-message in SaslAuthenticate.
async fn scram_first_answer(addr: &str, user: &str) -> (String, String) {
    use kafka_protocol::messages::{
        ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
        SaslHandshakeRequest, SaslHandshakeResponse,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn call<Req: Encodable, Resp: Decodable>(
        s: &mut tokio::net::TcpStream,
        api: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        let mut buf = bytes::BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("herald-test")))
            .encode(&mut buf, api.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        s.write_all(&(buf.len() as i32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&buf).await.unwrap();
        let len = s.read_i32().await.unwrap();
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body).await.unwrap();
        let mut b = bytes::Bytes::from(body);
        ResponseHeader::decode(&mut b, api.response_header_version(version)).unwrap();
        Resp::decode(&mut b, version).unwrap()
    }

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hs: SaslHandshakeResponse = call(
        &mut s,
        ApiKey::SaslHandshake,
        1,
        &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256")),
    )
    .await;
    assert_eq!(hs.error_code, 0);
    let first: SaslAuthenticateResponse = call(
        &mut s,
        ApiKey::SaslAuthenticate,
        1,
        &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(format!(
            "n,,n={user},r=clientnonce0123456789"
        ))),
    )
    .await;
    assert_eq!(first.error_code, 0, "{:?}", first.error_message);
    let text = String::from_utf8(first.auth_bytes.to_vec()).unwrap();
    let attr = |name: &str| {
        text.split(',')
            .find_map(|a| a.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {text:?}"))
            .to_owned()
    };
    (attr("s="), attr("i="))
}

fn kafka_listener(server: &Server, name: &str) -> String {
    server
        .stdout_lines
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("Kafka") && w.next() == Some(name))
                .then(|| w.next().map(str::to_owned))
        })
        .flatten()
        .unwrap_or_else(|| panic!("no Kafka {name} line in {:?}", server.stdout_lines))
}

/// A restart must not change what SCRAM answers for a user that does not exist: if the fake
/// salt changed while real users' salts stay, comparing answers across a restart would tell
/// which users exist.
#[tokio::test]
async fn scram_answers_unknown_users_the_same_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--kafka-listener", "SASL=SASL_PLAINTEXT://127.0.0.1:0"];
    let envs = [("HERALD_ADMIN_API_KEY", ADMIN)];
    let server = Server::start(dir.path(), &args, &envs);
    let addr = kafka_listener(&server, "SASL");
    let before = scram_first_answer(&addr, "nobody-here").await;
    assert_eq!(
        before,
        scram_first_answer(&addr, "nobody-here").await,
        "stable within a process"
    );
    let other = scram_first_answer(&addr, "someone-else").await;
    assert_ne!(before.0, other.0, "each unknown user has its own salt");
    server.stop();

    let server = Server::start(dir.path(), &args, &envs);
    let addr = kafka_listener(&server, "SASL");
    assert_eq!(scram_first_answer(&addr, "nobody-here").await, before);
    server.stop();
}

/// The gateway's routes (Centrifugo's server API under `/api`) sit behind the same HTTP layers
/// as `/v1`: an API key is the same subject on both, with one request quota between them.
#[tokio::test]
async fn api_keys_are_one_subject_with_one_quota_on_v1_and_api() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        "[quotas.defaults]\nhttp_request_rate = 1000\n[quotas.users.admin]\nhttp_request_rate = 2\n[quotas.tenants.slow]\nhttp_request_rate = 1\n",
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[("HERALD_ADMIN_API_KEY", ADMIN)],
    );
    let slow = tenant_create(&server, "slow");
    let tenant_key = slow["api_key"].as_str().unwrap();
    let (s, issued, _) = call(
        &server,
        Method::POST,
        ADMIN,
        "/v1/api-keys",
        Some(json!({"name": "ops"}).to_string()),
    )
    .await;
    assert_eq!(s, 201, "{issued}");
    let issued = issued["key"].as_str().unwrap().to_owned();
    // Let the admin's bucket (2 requests a second) fill up again after the setup.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // The configured admin key: the server API is held to User:admin's quota.
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let (s, body, headers) = call(&server, Method::POST, ADMIN, "/api/info", None).await;
        if s == 429 {
            limited = Some((body, headers));
        }
        statuses.push(s);
    }
    assert_eq!(&statuses[..2], [200, 200], "{statuses:?}");
    let (body, headers) = limited.unwrap_or_else(|| panic!("no 429 on /api: {statuses:?}"));
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(headers.contains_key("retry-after"));

    // A tenant key spends one budget on /v1 and /api (a request a second): once /v1 has used
    // it up, /api is refused too. (Three tries, as a token may come back between requests.)
    let mut v1 = Vec::new();
    while v1.last() != Some(&429) && v1.len() < 20 {
        v1.push(
            call(&server, Method::GET, tenant_key, "/v1/topics", None)
                .await
                .0,
        );
    }
    assert_eq!(v1.last(), Some(&429), "{v1:?}");
    let mut api = Vec::new();
    for _ in 0..3 {
        api.push(
            call(&server, Method::POST, tenant_key, "/api/info", None)
                .await
                .0,
        );
    }
    assert!(api.contains(&429), "{api:?}");

    // An issued admin key is an admin on both.
    let (s, body, _) = call(&server, Method::GET, &issued, "/v1/topics", None).await;
    assert_eq!(s, 200, "{body}");
    let (s, body, _) = call(&server, Method::POST, &issued, "/api/info", None).await;
    assert_eq!(s, 200, "{body}");
    assert!(body["result"]["nodes"].is_array(), "{body}");
    server.stop();
}
