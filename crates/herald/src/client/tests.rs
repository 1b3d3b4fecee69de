//! Unit tests of the pure parts: parsing, batching, rendering.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

#[test]
fn key_value_pairs() {
    assert_eq!(
        parse_key_value("retention.ms=7776000000"),
        Ok(("retention.ms".into(), "7776000000".into()))
    );
    // Only the first `=` separates; the value may hold more, or be empty.
    assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
    assert!(parse_key_value("retention.ms").is_err());
    assert!(parse_key_value("=1").is_err());
    assert_eq!(
        parse_header("trace:abc:def"),
        Ok(("trace".into(), "abc:def".into()))
    );
    assert!(parse_header("trace=abc").is_err());
}

fn records(input: &[u8]) -> Vec<Vec<u8>> {
    let mut r = std::io::Cursor::new(input);
    let mut out = Vec::new();
    while let Ok(Some(rec)) = read_record(&mut r) {
        out.push(rec);
    }
    out
}

#[test]
fn lines_become_records() {
    assert_eq!(records(b"a\nb\n"), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(records(b"a\nb"), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(
        records(b"a\n\nb\n"),
        vec![b"a".to_vec(), vec![], b"b".to_vec()]
    );
    assert_eq!(records(b"a\n\n"), vec![b"a".to_vec(), vec![]]);
    assert_eq!(records(b"\n"), vec![Vec::<u8>::new()]);
    assert!(records(b"").is_empty());
    // Only the newline is removed.
    assert_eq!(records(b" x\r\n"), vec![b" x\r".to_vec()]);
}

#[test]
fn batch_bodies() -> anyhow::Result<()> {
    let headers = BTreeMap::new();
    let mut b = Batch::new(None, None, &headers);
    b.push(br#"{"test": "event"}"#)?;
    b.push(b"")?;
    b.push(&[0xff, 0x00])?;
    assert_eq!(b.len(), 3);
    let body: Value = serde_json::from_slice(&b.take_body())?;
    assert_eq!(
        body,
        json!({"records": [
            {"value": "{\"test\": \"event\"}"},
            {"value": ""},
            {"value_base64": "/wA="},
        ]})
    );
    assert_eq!((b.len(), b.bytes), (0, 0));

    let headers = BTreeMap::from([("source".to_owned(), "cli".to_owned())]);
    let mut b = Batch::new(Some(2), Some("k"), &headers);
    b.push(b"v")?;
    let body: Value = serde_json::from_slice(&b.take_body())?;
    assert_eq!(
        body,
        json!({"partition": 2, "records": [{"key": "k", "value": "v", "headers": {"source": "cli"}}]})
    );
    Ok(())
}

#[test]
fn batches_fill_by_count_and_by_size() -> anyhow::Result<()> {
    let headers = BTreeMap::new();
    let mut b = Batch::new(None, None, &headers);
    for _ in 0..BATCH_RECORDS {
        assert!(!b.is_full());
        b.push(b"x")?;
    }
    assert!(b.is_full());
    let mut b = Batch::new(None, None, &headers);
    b.push(&vec![b'x'; BATCH_BYTES])?;
    assert!(b.is_full());
    Ok(())
}

#[test]
fn offsets() {
    assert_eq!(parse_offset("start"), Ok(StartOffset::Start));
    assert_eq!(parse_offset("end"), Ok(StartOffset::End));
    assert_eq!(parse_offset("47"), Ok(StartOffset::Exact(47)));
    assert_eq!(parse_offset("+2"), Ok(StartOffset::AfterStart(2)));
    assert_eq!(parse_offset("-3"), Ok(StartOffset::BeforeEnd(3)));
    assert!(parse_offset("-").is_err());
    assert!(parse_offset("x").is_err());
    assert!(parse_offset("+-1").is_err());

    let p = PartitionDescription {
        partition: 0,
        log_start_offset: 10,
        high_watermark: 20,
        size_bytes: 0,
    };
    assert_eq!(StartOffset::Start.resolve(&p), (10, 0));
    assert_eq!(StartOffset::End.resolve(&p), (20, 0));
    assert_eq!(StartOffset::Exact(15).resolve(&p), (15, 0));
    assert_eq!(StartOffset::Exact(3).resolve(&p), (10, 0));
    assert_eq!(StartOffset::Exact(20).resolve(&p), (20, 0));
    assert_eq!(StartOffset::Exact(25).resolve(&p), (20, 25));
    assert_eq!(StartOffset::AfterStart(2).resolve(&p), (12, 0));
    assert_eq!(StartOffset::AfterStart(50).resolve(&p), (20, 60));
    assert_eq!(StartOffset::BeforeEnd(3).resolve(&p), (17, 0));
    assert_eq!(StartOffset::BeforeEnd(30).resolve(&p), (10, 0));
}

fn event(v: Value) -> anyhow::Result<Event> {
    Ok(serde_json::from_value(v)?)
}

#[test]
fn consumed_records_render_as_json_lines() -> anyhow::Result<()> {
    let e = event(json!({
        "partition": 1, "offset": 7, "timestamp": 1700000000000_i64,
        "key": 42, "key_format": "json",
        "value": {"test": "event"}, "format": "json", "headers": {},
    }))?;
    assert_eq!(
        String::from_utf8(render("t.x", &e, OutputFormat::Json)?)?,
        "{\"topic\":\"t.x\",\"partition\":1,\"offset\":7,\"timestamp\":1700000000000,\
         \"key\":\"42\",\"value\":{\"test\":\"event\"}}\n"
    );
    assert_eq!(
        String::from_utf8(render("t.x", &e, OutputFormat::Value)?)?,
        "{\"test\":\"event\"}\n"
    );

    let e = event(json!({
        "partition": 0, "offset": 0, "timestamp": 5,
        "key": null, "key_format": "null",
        "value": "plain text", "format": "utf8", "headers": {"h": "v"},
    }))?;
    assert_eq!(
        String::from_utf8(render("t", &e, OutputFormat::Json)?)?,
        "{\"topic\":\"t\",\"partition\":0,\"offset\":0,\"timestamp\":5,\"key\":null,\
         \"value\":\"plain text\",\"headers\":{\"h\":\"v\"}}\n"
    );
    assert_eq!(render("t", &e, OutputFormat::Value)?, b"plain text\n");

    let e = event(json!({
        "partition": 0, "offset": 1, "timestamp": 5,
        "key": "/wA=", "key_format": "base64",
        "value": "/wA=", "format": "base64", "headers": {},
    }))?;
    let line: Value = serde_json::from_slice(&render("t", &e, OutputFormat::Json)?)?;
    assert_eq!(line.get("value_encoding"), Some(&json!("base64")));
    assert_eq!(line.get("key_encoding"), Some(&json!("base64")));
    assert_eq!(render("t", &e, OutputFormat::Value)?, b"\xff\x00\n");

    let e = event(json!({
        "partition": 0, "offset": 2, "timestamp": 5,
        "key": null, "key_format": "null", "value": null, "format": "null",
    }))?;
    assert_eq!(render("t", &e, OutputFormat::Value)?, b"\n");
    Ok(())
}

#[test]
fn tables() {
    let rows = vec![
        vec!["smarteros.1.a.b".to_owned(), "3".to_owned()],
        vec!["x".to_owned(), "12".to_owned()],
    ];
    assert_eq!(
        table(&["NAME", "PARTITIONS"], &rows),
        "NAME             PARTITIONS\nsmarteros.1.a.b  3\nx                12\n"
    );
    assert_eq!(table(&["NAME", "PARTITIONS"], &[]), "NAME  PARTITIONS\n");
    assert_eq!(table(&[], &[vec!["NAME".into(), "t".into()]]), "NAME  t\n");
}

#[test]
fn descriptions() {
    let d = TopicDescription {
        name: "smarteros.1.test.event_test".into(),
        tenant: Some("1".into()),
        service: Some("test".into()),
        event_type: Some("event_test".into()),
        partitions: vec![PartitionDescription {
            partition: 0,
            log_start_offset: 0,
            high_watermark: 1,
            size_bytes: 87,
        }],
        config: BTreeMap::from([("retention.ms".to_owned(), "1000".to_owned())]),
        created_at: "2025-01-01T00:00:00Z".into(),
    };
    assert_eq!(
        format_description(&d),
        "SUMMARY\n=======\n\
         NAME        smarteros.1.test.event_test\n\
         TENANT      1\n\
         SERVICE     test\n\
         EVENT-TYPE  event_test\n\
         PARTITIONS  1\n\
         CREATED     2025-01-01T00:00:00Z\n\
         \nCONFIGS\n=======\n\
         retention.ms=1000\n\
         \nPARTITIONS\n==========\n\
         PARTITION  LOG-START  HIGH-WATERMARK  SIZE\n\
         0          0          1               87\n"
    );
}

#[test]
fn error_answers() {
    let e = api_error(
        StatusCode::NOT_FOUND,
        br#"{"error":{"code":"topic_not_found","message":"topic x does not exist"}}"#,
    );
    assert_eq!(e.code, "topic_not_found");
    assert_eq!(e.to_string(), "topic x does not exist (404)");
    let e = api_error(
        StatusCode::UNAUTHORIZED,
        br#"{"error":{"code":"unauthorized","message":"m"}}"#,
    );
    assert!(e.to_string().contains("HERALD_API_KEY"));
    assert!(e.to_string().contains("--api-key"));
    let e = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
    assert_eq!(e.to_string(), "<html>bad gateway</html> (502)");
    let e = api_error(StatusCode::BAD_GATEWAY, b"");
    assert_eq!(e.to_string(), "Bad Gateway (502)");
}

#[test]
fn servers_and_urls() -> anyhow::Result<()> {
    assert_eq!(
        parse_server("127.0.0.1:8000")?.as_str(),
        "http://127.0.0.1:8000/"
    );
    assert!(parse_server("ftp://x").is_err());
    let api = Api {
        http: {
            herald_auth::tls::install_default_provider();
            reqwest::Client::new()
        },
        base: parse_server("http://h:1/herald/")?,
        server: "http://h:1/herald".into(),
        key: "k".into(),
    };
    let url = api.url(
        &["v1", "topics", "a/b c"],
        &[("match", "smarteros.*".to_owned())],
    );
    assert_eq!(
        url.as_str(),
        "http://h:1/herald/v1/topics/a%2Fb%20c?match=smarteros.*"
    );
    Ok(())
}
