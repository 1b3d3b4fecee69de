//! The crate's dependency rule: among Herald's crates it depends on `herald-core` and
//! `herald-broker` only — never on `herald-log` (the broker is the one door to storage) nor on
//! an interface crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn depends_on_core_and_broker_only() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let doc: toml::Table = manifest.parse().unwrap();
    let mut herald: Vec<&str> = ["dependencies", "dev-dependencies", "build-dependencies"]
        .iter()
        .filter_map(|section| doc.get(*section).and_then(toml::Value::as_table))
        .flat_map(|t| t.keys())
        .map(String::as_str)
        .filter(|name| name.starts_with("herald"))
        .collect();
    herald.sort_unstable();
    assert_eq!(herald, ["herald-broker", "herald-core"]);
}
