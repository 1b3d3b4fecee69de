//! herald-cluster's wire admin client against the real binary: a SASL_PLAINTEXT listener with
//! SCRAM and a superuser, as a Kafka cluster in cluster mode would be set up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::Server;
use herald_cluster::wire::{
    AclBinding, AclFilter, Admin, ClientConfig, Connection, OffsetSpec, Operation, PatternFilter,
    PatternType, Permission, ResourceType, ScramMechanism, WireError,
};
use serde_json::json;

const ADMIN_KEY: &str = "cluster-wire-test-admin-key-0123456789";
const SUPERUSER: &str = "admin";
const SUPERUSER_PASSWORD: &str = "admin-secret-password";

/// `herald serve` with a SASL listener and the superuser `User:admin` (the default
/// `security.superusers`) created over the HTTP API.
async fn start() -> (tempfile::TempDir, Server, String) {
    start_with("SASL=SASL_PLAINTEXT://127.0.0.1:0").await
}

/// As `start`, with the listener `SASL=…` given.
async fn start_with(listener: &str) -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--kafka-listener", listener],
        &[
            ("HERALD_ADMIN_API_KEY", ADMIN_KEY),
            ("HERALD_SUPERUSERS", "User:admin"),
        ],
    );
    let r = server
        .client()
        .put(format!("{}/v1/users/{SUPERUSER}", server.url))
        .header("X-API-Key", ADMIN_KEY)
        .header("content-type", "application/json")
        .body(json!({ "password": SUPERUSER_PASSWORD }).to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let addr = server
        .stdout_lines
        .iter()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("Kafka") && w.next() == Some("SASL"))
                .then(|| w.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no Kafka SASL line in {:?}", server.stdout_lines));
    (dir, server, addr)
}

fn config(bootstrap: &str, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let props: BTreeMap<String, String> = [
        ("bootstrap.servers", bootstrap),
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", mechanism),
        ("sasl.username", user),
        ("sasl.password", password),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    ClientConfig::from_properties(&props).unwrap()
}

async fn admin(addr: &str) -> Admin {
    Admin::connect(config(addr, "SCRAM-SHA-256", SUPERUSER, SUPERUSER_PASSWORD))
        .await
        .unwrap()
}

/// A port nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

#[tokio::test]
async fn connects_authenticates_and_names_unreachable_brokers() {
    let (_dir, server, addr) = start().await;

    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let conn = Connection::connect(&config(&addr, mechanism, SUPERUSER, SUPERUSER_PASSWORD))
            .await
            .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        assert_eq!(conn.addr(), addr);
        // Negotiated from what Herald advertises: its ACL APIs go up to v3.
        assert_eq!(
            conn.version(kafka_protocol::messages::ApiKey::CreateAcls)
                .unwrap(),
            3
        );
    }

    let wrong = Connection::connect(&config(
        &addr,
        "SCRAM-SHA-256",
        SUPERUSER,
        "not-the-password",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(wrong, WireError::AuthenticationFailed { .. }),
        "{wrong}"
    );
    let unknown = Connection::connect(&config(&addr, "SCRAM-SHA-512", "nobody", "whatever-pw"))
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, WireError::AuthenticationFailed { .. }),
        "{unknown}"
    );
    // PLAIN is not enabled on Herald's SASL listeners: refused at the handshake, clearly.
    let plain = Connection::connect(&config(&addr, "PLAIN", SUPERUSER, SUPERUSER_PASSWORD))
        .await
        .unwrap_err();
    match &plain {
        WireError::AuthenticationFailed { reason, .. } => {
            assert!(reason.contains("SCRAM-SHA-256"), "{reason}")
        }
        other => panic!("{other}"),
    }

    // A closed port fails at once, named in the error.
    let closed = closed_port();
    let started = Instant::now();
    let err = Connection::connect(&config(&closed, "SCRAM-SHA-256", SUPERUSER, "x"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match &err {
        WireError::Unreachable { attempts } => {
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].0, closed);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains(&closed), "{err}");

    // A bootstrap list is tried in turn: the dead address first, then the live one.
    let list = format!("{closed},{addr}");
    let conn = Connection::connect(&config(
        &list,
        "SCRAM-SHA-256",
        SUPERUSER,
        SUPERUSER_PASSWORD,
    ))
    .await
    .unwrap();
    assert_eq!(conn.addr(), addr);
    server.stop();
}

#[tokio::test]
async fn scram_credentials_made_here_authenticate_there() {
    let (_dir, server, addr) = start().await;
    let mut admin = admin(&addr).await;

    admin
        .upsert_scram_credential(
            "svc-wire",
            ScramMechanism::Sha512,
            "svc-wire-password",
            8192,
        )
        .await
        .unwrap();
    let described = admin
        .describe_scram_credentials(Some(&["svc-wire"]))
        .await
        .unwrap();
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].user, "svc-wire");
    assert_eq!(described[0].credentials.len(), 1);
    assert_eq!(
        described[0].credentials[0].mechanism,
        ScramMechanism::Sha512
    );
    assert_eq!(described[0].credentials[0].iterations, 8192);
    let all = admin.describe_scram_credentials(None).await.unwrap();
    let names: Vec<&str> = all.iter().map(|u| u.user.as_str()).collect();
    assert!(
        names.contains(&"svc-wire") && names.contains(&SUPERUSER),
        "{names:?}"
    );

    // The salted password computed here is what the broker checks proofs against.
    Connection::connect(&config(
        &addr,
        "SCRAM-SHA-512",
        "svc-wire",
        "svc-wire-password",
    ))
    .await
    .unwrap();
    let wrong = Connection::connect(&config(
        &addr,
        "SCRAM-SHA-512",
        "svc-wire",
        "svc-wire-passw0rd",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(wrong, WireError::AuthenticationFailed { .. }),
        "{wrong}"
    );
    // Only the mechanism that was set exists.
    let other = Connection::connect(&config(
        &addr,
        "SCRAM-SHA-256",
        "svc-wire",
        "svc-wire-password",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(other, WireError::AuthenticationFailed { .. }),
        "{other}"
    );

    // Out-of-range iterations are refused before anything is sent.
    let low = admin
        .upsert_scram_credential("svc-wire", ScramMechanism::Sha256, "svc-wire-password", 100)
        .await
        .unwrap_err();
    assert!(matches!(low, WireError::Config(_)), "{low}");

    admin
        .delete_scram_credential("svc-wire", ScramMechanism::Sha512)
        .await
        .unwrap();
    let gone = Connection::connect(&config(
        &addr,
        "SCRAM-SHA-512",
        "svc-wire",
        "svc-wire-password",
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(gone, WireError::AuthenticationFailed { .. }),
        "{gone}"
    );
    let err = admin
        .describe_scram_credentials(Some(&["svc-wire"]))
        .await
        .unwrap_err();
    assert_eq!(
        err.kafka_error(),
        Some(kafka_protocol::error::ResponseError::ResourceNotFound),
        "{err}"
    );

    // A user without ACLs authenticates but is refused admin requests.
    admin
        .upsert_scram_credential(
            "svc-plain",
            ScramMechanism::Sha256,
            "svc-plain-password",
            4096,
        )
        .await
        .unwrap();
    let mut unprivileged = Admin::connect(config(
        &addr,
        "SCRAM-SHA-256",
        "svc-plain",
        "svc-plain-password",
    ))
    .await
    .unwrap();
    let denied = unprivileged
        .describe_acls(&AclFilter::any())
        .await
        .unwrap_err();
    assert_eq!(
        denied.kafka_error(),
        Some(kafka_protocol::error::ResponseError::ClusterAuthorizationFailed),
        "{denied}"
    );
    server.stop();
}

#[tokio::test]
async fn acls_are_created_described_and_deleted() {
    let (_dir, server, addr) = start().await;
    let mut admin = admin(&addr).await;

    let topic = AclBinding {
        resource_type: ResourceType::Topic,
        name: "smarteros.acme.".to_owned(),
        pattern: PatternType::Prefixed,
        principal: "User:svc-acme".to_owned(),
        host: "*".to_owned(),
        operation: Operation::Write,
        permission: Permission::Allow,
    };
    let group = AclBinding {
        resource_type: ResourceType::Group,
        name: "acme-readers".to_owned(),
        pattern: PatternType::Literal,
        principal: "User:svc-acme".to_owned(),
        host: "*".to_owned(),
        operation: Operation::Read,
        permission: Permission::Allow,
    };
    let deny = AclBinding {
        resource_type: ResourceType::Topic,
        name: "smarteros.acme.secret.x".to_owned(),
        pattern: PatternType::Literal,
        principal: "User:svc-other".to_owned(),
        host: "10.0.0.1".to_owned(),
        operation: Operation::Read,
        permission: Permission::Deny,
    };
    admin
        .create_acls(&[topic.clone(), group.clone(), deny.clone()])
        .await
        .unwrap();

    let mut all = admin.describe_acls(&AclFilter::any()).await.unwrap();
    all.sort();
    let mut expected = vec![topic.clone(), group.clone(), deny.clone()];
    expected.sort();
    assert_eq!(all, expected);

    let by_principal = AclFilter {
        principal: Some("User:svc-acme".to_owned()),
        ..AclFilter::any()
    };
    let mut acme = admin.describe_acls(&by_principal).await.unwrap();
    acme.sort();
    let mut expected = vec![topic.clone(), group.clone()];
    expected.sort();
    assert_eq!(acme, expected);

    // MATCH: every binding that applies to one topic name (the prefix and the literal).
    let matching = AclFilter {
        resource_type: Some(ResourceType::Topic),
        name: Some("smarteros.acme.secret.x".to_owned()),
        pattern: PatternFilter::Match,
        ..AclFilter::any()
    };
    let mut applies = admin.describe_acls(&matching).await.unwrap();
    applies.sort();
    let mut expected = vec![topic.clone(), deny.clone()];
    expected.sort();
    assert_eq!(applies, expected);

    // An invalid binding is refused in Kafka's terms, naming it.
    let invalid = AclBinding {
        principal: "nobody".to_owned(),
        ..group.clone()
    };
    let err = admin.create_acls(&[invalid]).await.unwrap_err();
    assert!(err.kafka_error().is_some(), "{err}");
    assert!(err.to_string().contains("nobody"), "{err}");

    let deleted = admin
        .delete_acls(std::slice::from_ref(&by_principal))
        .await
        .unwrap();
    let mut deleted_sorted = deleted.clone();
    deleted_sorted.sort();
    let mut expected = vec![topic, group];
    expected.sort();
    assert_eq!(deleted_sorted, expected);
    assert!(admin.describe_acls(&by_principal).await.unwrap().is_empty());
    assert_eq!(
        admin.describe_acls(&AclFilter::any()).await.unwrap(),
        [deny]
    );
    server.stop();
}

#[tokio::test]
async fn groups_and_offsets() {
    let (_dir, server, addr) = start().await;
    let topic = "smarteros.acme.wire.offsets";
    let (status, body) = server
        .post(
            "/v1/topics",
            &json!({"name": topic, "partitions": 2}).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, body) = server
        .post(
            &format!("/v1/topics/{topic}/records"),
            &json!({"partition": 0, "records": [{"value": "a"}, {"value": "b"}, {"value": "c"}]})
                .to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut admin = admin(&addr).await;
    let offsets = admin
        .list_offsets(topic, &[(0, OffsetSpec::Earliest), (1, OffsetSpec::Latest)])
        .await
        .unwrap();
    assert_eq!(offsets.len(), 2);
    assert_eq!((offsets[0].partition, offsets[0].offset), (0, Some(0)));
    assert_eq!((offsets[1].partition, offsets[1].offset), (1, Some(0)));
    let latest = admin
        .list_offsets(topic, &[(0, OffsetSpec::Latest)])
        .await
        .unwrap();
    assert_eq!(latest[0].offset, Some(3));
    let by_time = admin
        .list_offsets(topic, &[(0, OffsetSpec::Timestamp(before - 60_000))])
        .await
        .unwrap();
    assert_eq!(by_time[0].offset, Some(0));
    assert!(by_time[0].timestamp >= before - 1_000, "{by_time:?}");
    let future = admin
        .list_offsets(topic, &[(0, OffsetSpec::Timestamp(before + 3_600_000))])
        .await
        .unwrap();
    assert_eq!(future[0].offset, None);
    let missing = admin
        .list_offsets("smarteros.acme.wire.none", &[(0, OffsetSpec::Latest)])
        .await
        .unwrap_err();
    assert!(missing.kafka_error().is_some(), "{missing}");

    // A group comes into being by an administrative commit, as with --reset-offsets.
    let group = "wire-admin-group";
    admin
        .commit_offsets(group, &[(topic, 0, 2), (topic, 1, 0)])
        .await
        .unwrap();
    let groups = admin.list_groups().await.unwrap();
    assert!(groups.iter().any(|g| g.group_id == group), "{groups:?}");
    let described = admin.describe_group(group).await.unwrap();
    assert_eq!(described.group_id, group);
    assert_eq!(described.state, "Empty");
    assert!(described.members.is_empty());

    let committed = admin.fetch_offsets(group, None).await.unwrap();
    let got: Vec<(String, i32, i64)> = committed
        .iter()
        .map(|c| (c.topic.clone(), c.partition, c.offset))
        .collect();
    assert_eq!(got, [(topic.to_owned(), 0, 2), (topic.to_owned(), 1, 0)]);
    let one = admin
        .fetch_offsets(group, Some(&[(topic, &[0][..])]))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].partition, one[0].offset), (0, 2));
    // The same group over HTTP agrees.
    let (status, body) = server.get(&format!("/v1/groups/{group}")).await;
    assert_eq!(status, 200, "{body}");

    admin.delete_groups(&[group]).await.unwrap();
    let groups = admin.list_groups().await.unwrap();
    assert!(!groups.iter().any(|g| g.group_id == group), "{groups:?}");
    assert!(admin.fetch_offsets(group, None).await.unwrap().is_empty());
    let again = admin.delete_groups(&[group]).await.unwrap_err();
    assert!(again.kafka_error().is_some(), "{again}");
    server.stop();
}

#[tokio::test]
async fn sasl_ssl_trusts_the_ca_in_ssl_ca_location() {
    let (dir, server, addr) = start_with("SASL=SASL_SSL://127.0.0.1:0").await;
    let ca = dir.path().join("tls/ca.pem");
    let props = |ca: Option<&std::path::Path>| {
        let mut p: BTreeMap<String, String> = [
            ("bootstrap.servers", addr.as_str()),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.username", SUPERUSER),
            ("sasl.password", SUPERUSER_PASSWORD),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Some(ca) = ca {
            p.insert("ssl.ca.location".to_owned(), ca.display().to_string());
        }
        ClientConfig::from_properties(&p).unwrap()
    };
    let mut admin = Admin::connect(props(Some(&ca))).await.unwrap();
    assert!(
        admin
            .describe_acls(&AclFilter::any())
            .await
            .unwrap()
            .is_empty()
    );

    let err = Connection::connect(&props(None)).await.unwrap_err();
    assert!(matches!(err, WireError::Config(_)), "{err}");
    // A CA that did not sign the broker's certificate fails the handshake, per address.
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::herald_bin())
        .args(["cert", "dev", "--out"])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = Connection::connect(&props(Some(&other.path().join("ca.pem"))))
        .await
        .unwrap_err();
    match &err {
        WireError::Unreachable { attempts } => {
            assert_eq!(attempts.len(), 1);
            assert!(attempts[0].1.contains("TLS"), "{err}");
        }
        other => panic!("{other}"),
    }
    server.stop();
}
