//! The crate boundaries ARCHITECTURE.md states, checked over `cargo metadata`: every dependency
//! edge between workspace crates — normal, dev and build — must be an allowed one. Above all,
//! `herald-broker` is the only door to storage: no interface crate may reach `herald-log`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

/// The workspace crates a crate may depend on. A workspace crate missing here may depend on no
/// other workspace crate until it is added.
fn allowed(krate: &str) -> Option<&'static [&'static str]> {
    const INTERFACE: &[&str] = &["herald-core", "herald-auth", "herald-broker"];
    Some(match krate {
        "herald-core" => &[],
        "herald-log" => &["herald-core"],
        "herald-auth" => &["herald-core"],
        "herald-broker" => &["herald-core", "herald-auth", "herald-log"],
        "herald-kafka" | "herald-http" | "herald-realtime" => INTERFACE,
        "herald-cluster" => &["herald-core", "herald-auth", "herald-broker"],
        // The binary wires everything together.
        "herald" => return None,
        _ => &[],
    })
}

fn kind(dep: &Value) -> &str {
    match dep.get("kind").and_then(Value::as_str) {
        Some("dev") => "dev-dependency",
        Some("build") => "build-dependency",
        _ => "dependency",
    }
}

/// Every edge between workspace members that the rules refuse, as `from → to (kind)`.
fn forbidden_edges(metadata: &Value) -> Vec<String> {
    let members: BTreeSet<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["source"].is_null())
        .filter_map(|p| p["name"].as_str())
        .collect();
    let mut out = Vec::new();
    for p in metadata["packages"].as_array().expect("packages") {
        let Some(name) = p["name"].as_str().filter(|n| members.contains(n)) else {
            continue;
        };
        if !p["source"].is_null() {
            continue;
        }
        let Some(allowed) = allowed(name) else {
            continue;
        };
        for dep in p["dependencies"].as_array().expect("dependencies") {
            let Some(to) = dep["name"].as_str() else {
                continue;
            };
            if members.contains(to) && !allowed.contains(&to) {
                out.push(format!("{name} → {to} ({})", kind(dep)));
            }
        }
    }
    out
}

fn cargo_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn workspace_dependency_edges_are_allowed() {
    let metadata = cargo_metadata();
    let names: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    // The check means something only if it saw the crates it is about.
    for expected in ["herald-broker", "herald-log", "herald-kafka", "herald-http"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let forbidden = forbidden_edges(&metadata);
    assert!(
        forbidden.is_empty(),
        "forbidden dependency edges between workspace crates (see ARCHITECTURE.md's \
         invariants; storage is reached only through herald-broker):\n  {}",
        forbidden.join("\n  ")
    );
}

/// The checker itself finds an interface crate depending on the log, whatever the kind.
#[test]
fn an_interface_depending_on_the_log_is_named() {
    let metadata = serde_json::json!({
        "packages": [
            {"name": "herald-log", "source": null, "dependencies": []},
            {"name": "herald-broker", "source": null, "dependencies": [
                {"name": "herald-log", "kind": null},
            ]},
            {"name": "herald-kafka", "source": null, "dependencies": [
                {"name": "herald-broker", "kind": null},
                {"name": "herald-log", "kind": "dev"},
                {"name": "bytes", "kind": null},
            ]},
            {"name": "herald-cluster", "source": null, "dependencies": [
                {"name": "herald-log", "kind": null},
            ]},
            {"name": "bytes", "source": "registry+https://github.com/rust-lang/crates.io-index",
             "dependencies": []},
        ]
    });
    assert_eq!(
        forbidden_edges(&metadata),
        vec![
            "herald-kafka → herald-log (dev-dependency)".to_owned(),
            "herald-cluster → herald-log (dependency)".to_owned(),
        ]
    );
}
