#!/usr/bin/env bash
# kcat (librdkafka's command-line client) against Herald: metadata, the seed's rpk test done with
# kcat, every -z codec, keys and headers, offsets, and the envelope policy.
# Needs HERALD_KAFKA (host:port), HERALD_HTTP (URL) and HERALD_API_KEY, as compat/run exports them.
set -uo pipefail

: "${HERALD_KAFKA:?HERALD_KAFKA must be host:port}"
: "${HERALD_HTTP:?HERALD_HTTP must be the HTTP API URL}"
: "${HERALD_API_KEY:?HERALD_API_KEY must be set}"
B="$HERALD_KAFKA"
TENANT="76953480-3"
SEED_TOPIC="smarteros.$TENANT.test.event_test"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
failures=()

fail() {
  echo "    $*" >&2
  return 1
}

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
  if [ "$2" != "$3" ]; then
    fail "$1: expected $(printf '%q' "$2"), got $(printf '%q' "$3")"
  fi
}

expect_contains() {
  if ! grep -qF -- "$2" <<<"$3"; then
    fail "$1: no line $(printf '%q' "$2") in:" && return 1
  fi
}

run_test() {
  local name="$1"
  shift
  if (set -e; "$@") >"$TMP/out" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL $name"
    sed 's/^/    /' "$TMP/out"
  fi
}

uniq_name() { echo "$1_$(od -An -N5 -tx1 /dev/urandom | tr -d ' \n')"; }

http() {
  curl -sS -H "X-API-Key: $HERALD_API_KEY" "$@"
}

# http_json PATH PYTHON-EXPRESSION-ON-j: evaluates the expression on the parsed JSON body.
http_json() {
  http "$HERALD_HTTP$1" | python3 -c "import json,sys; j=json.load(sys.stdin); print($2)"
}

consume_all() { # consume_all TOPIC [extra kcat args]
  local topic="$1"
  shift
  kcat -C -b "$B" -t "$topic" -o beginning -e -q "$@"
}

# --- tests ------------------------------------------------------------------------------------

test_seed_rpk_produce_consume() {
  # rpk topic produce / consume from the seed, with kcat.
  echo '{"test": "event"}' | kcat -P -b "$B" -t "$SEED_TOPIC"
  local out
  out="$(kcat -C -b "$B" -t "$SEED_TOPIC" -o beginning -e -q)"
  expect_eq "consumed" '{"test": "event"}' "$out"
  # Stored byte for byte: the HTTP API embeds the same JSON text.
  expect_eq "HTTP format" "json" "$(http_json "/v1/topics/$SEED_TOPIC/events?offset=0" "j['events'][0]['format']")"
  http "$HERALD_HTTP/v1/topics/$SEED_TOPIC/events?offset=0" | grep -qF '"value":{"test": "event"}' ||
    fail "HTTP read does not embed the value verbatim"
}

test_metadata_lists_broker_topic_partitions() {
  local topic
  topic="smarteros.$TENANT.compat.$(uniq_name kcat_meta)"
  http -f -X POST "$HERALD_HTTP/v1/topics" -H 'Content-Type: application/json' \
    -d "{\"name\":\"$topic\",\"partitions\":3}" >/dev/null
  local md
  md="$(kcat -L -b "$B")"
  echo "$md"
  expect_contains "metadata" " 1 brokers:" "$md"
  expect_contains "metadata" "  broker 0 at $B (controller)" "$md"
  expect_contains "metadata" "  topic \"$topic\" with 3 partitions:" "$md"
  expect_contains "metadata" "  topic \"$SEED_TOPIC\" with 1 partitions:" "$md"
  # One topic only.
  md="$(kcat -L -b "$B" -t "$topic")"
  expect_contains "metadata -t" " 1 topics:" "$md"
  for p in 0 1 2; do
    expect_contains "metadata -t" "    partition $p, leader 0, replicas: 0, isrs: 0" "$md"
  done
  # JSON flavour.
  kcat -L -b "$B" -t "$topic" -J | python3 -c "
import json, sys
md = json.load(sys.stdin)
assert [b['id'] for b in md['brokers']] == [0], md['brokers']
(t,) = md['topics']
assert t['topic'] == '$topic' and 'error' not in t, t
assert [p['partition'] for p in t['partitions']] == [0, 1, 2], t
assert all(p['leader'] == 0 for p in t['partitions']), t
"
}

test_metadata_unknown_and_invalid_topics() {
  local md topic
  # A tenant topic is auto-created by a metadata request for it (auto.create.topics.enable).
  topic="smarteros.$TENANT.compat.$(uniq_name kcat_auto)"
  md="$(kcat -L -b "$B" -t "$topic")"
  expect_contains "auto-created" "  topic \"$topic\" with 1 partitions:" "$md"
  # Another name that does not exist: UNKNOWN_TOPIC_OR_PARTITION; outside the grammar (an
  # upper-case service token, a space): INVALID_TOPIC_EXCEPTION.
  md="$(kcat -L -b "$B" -t "other.unknown" 2>&1)"
  expect_contains "unknown" 'topic "other.unknown" with 0 partitions: Broker: Unknown topic or partition' "$md"
  md="$(kcat -L -b "$B" -t "smarteros.$TENANT.Shopify.order_created" 2>&1)"
  expect_contains "invalid" "topic \"smarteros.$TENANT.Shopify.order_created\" with 0 partitions: Broker: Invalid topic" "$md"
  md="$(kcat -L -b "$B" -t "bad name!" 2>&1)"
  expect_contains "invalid" 'topic "bad name!" with 0 partitions: Broker: Invalid topic' "$md"
}

test_api_version_request_true() {
  local topic out
  topic="smarteros.$TENANT.compat.$(uniq_name kcat_apiver)"
  kcat -L -b "$B" -X api.version.request=true >/dev/null
  printf 'one\ntwo\n' | kcat -P -b "$B" -X api.version.request=true -t "$topic"
  out="$(consume_all "$topic" -X api.version.request=true)"
  expect_eq "round trip" $'one\ntwo' "$out"
}

codec_round_trip() {
  local codec="$1" topic out expected
  topic="smarteros.$TENANT.compat.$(uniq_name "kcat_z_$codec")"
  expected="$(for i in $(seq 1 200); do printf 'line %03d: %s\n' "$i" "smarteros order created smarteros order created smarteros order created"; done)"
  printf '%s\n' "$expected" | kcat -P -b "$B" -t "$topic" -z "$codec" -X linger.ms=100
  out="$(consume_all "$topic")"
  expect_eq "$codec round trip" "$expected" "$out"
  expect_eq "$codec high watermark" "200" \
    "$(http_json "/v1/topics/$topic" "j['partitions'][0]['high_watermark']")"
  echo "$topic" >"$TMP/codec_topic_$codec"
}

# The batches of a compressed produce are stored compressed (compression.type=producer). If a
# codec is stored at full size, librdkafka sent it uncompressed: it decides from ApiVersions
# whether the broker supports that codec.
codec_stored_compressed() {
  local codec="$1" topic size
  topic="$(cat "$TMP/codec_topic_$codec" 2>/dev/null)" || fail "the $codec round trip did not run"
  size="$(http_json "/v1/topics/$topic" "j['partitions'][0]['size_bytes']")"
  echo "$codec: $size bytes stored for 200 lines of 86 bytes"
  [ "$size" -lt 5000 ] || fail "$codec batch stored at $size bytes: sent or kept uncompressed"
}

test_key_and_headers() {
  local topic out
  topic="smarteros.$TENANT.compat.$(uniq_name kcat_keys)"
  printf 'order-1:{"n":1}\norder-2:{"n":2}\n' |
    kcat -P -b "$B" -t "$topic" -K: -H trace_id=trace_xyz -H source=kcat
  out="$(consume_all "$topic" -f '%k|%s|%h|%o\n')"
  expect_eq "keys, values, headers, offsets" \
    $'order-1|{"n":1}|trace_id=trace_xyz,source=kcat|0\norder-2|{"n":2}|trace_id=trace_xyz,source=kcat|1' "$out"
  expect_eq "HTTP headers" "{'trace_id': 'trace_xyz', 'source': 'kcat'}" \
    "$(http_json "/v1/topics/$topic/events?offset=0" "j['events'][0]['headers']")"
  expect_eq "HTTP key" "order-1" "$(http_json "/v1/topics/$topic/events?offset=0" "j['events'][0]['key']")"
}

test_partition_and_offsets() {
  local topic out ts
  topic="smarteros.$TENANT.compat.$(uniq_name kcat_offsets)"
  http -f -X POST "$HERALD_HTTP/v1/topics" -H 'Content-Type: application/json' \
    -d "{\"name\":\"$topic\",\"partitions\":2}" >/dev/null
  seq 1 10 | kcat -P -b "$B" -t "$topic" -p 1
  sleep 1.1
  ts=$(($(date +%s%3N) - 1))
  seq 11 15 | kcat -P -b "$B" -t "$topic" -p 1
  expect_eq "partition 0 is empty" "" "$(kcat -C -b "$B" -t "$topic" -p 0 -o beginning -e -q)"
  expect_eq "offset 12 on" "$(seq 13 15)" "$(kcat -C -b "$B" -t "$topic" -p 1 -o 12 -e -q)"
  expect_eq "last 2 (-o -2)" $'14\n15' "$(kcat -C -b "$B" -t "$topic" -p 1 -o -2 -e -q)"
  expect_eq "by timestamp (-o s@)" "$(seq 11 15)" "$(kcat -C -b "$B" -t "$topic" -p 1 -o "s@$ts" -e -q)"
  expect_eq "-c 3" $'1\n2\n3' "$(kcat -C -b "$B" -t "$topic" -p 1 -o beginning -c 3 -q)"
}

test_envelope_for_another_tenant_is_refused() {
  local topic="smarteros.$TENANT.shopify.order_created" out before after
  echo 'raw, not an envelope' | kcat -P -b "$B" -t "$topic"
  before="$(http_json "/v1/topics/$topic" "j['partitions'][0]['high_watermark']")"
  if out="$(echo '{"tenant_id":"other","service":"shopify","event_type":"order_created"}' |
    kcat -P -b "$B" -t "$topic" -X message.send.max.retries=0 2>&1)"; then
    fail "kcat exited 0 for a refused record: $out"
  fi
  echo "$out"
  # librdkafka's text for INVALID_RECORD (87).
  expect_contains "delivery error" "Broker: Broker failed to validate record" "$out"
  after="$(http_json "/v1/topics/$topic" "j['partitions'][0]['high_watermark']")"
  expect_eq "nothing stored" "$before" "$after"
}

test_consume_waits_for_new_records() {
  # Without -e, kcat long-polls (Fetch max_wait) and gets records produced later.
  local topic out
  topic="smarteros.$TENANT.compat.$(uniq_name kcat_wait)"
  echo first | kcat -P -b "$B" -t "$topic"
  (sleep 1 && echo second | kcat -P -b "$B" -t "$topic") &
  out="$(timeout 20 kcat -C -b "$B" -t "$topic" -o beginning -c 2 -q)"
  wait
  expect_eq "records" $'first\nsecond' "$out"
}

kcat -V 2>&1 | sed -n '1p;/librdkafka/p' | head -3

run_test "seed: kcat -P then kcat -C -e (rpk topic produce/consume)" test_seed_rpk_produce_consume
run_test "kcat -L lists broker, topics, partitions" test_metadata_lists_broker_topic_partitions
run_test "kcat -L -t: auto-created, unknown and invalid topics" test_metadata_unknown_and_invalid_topics
run_test "-X api.version.request=true" test_api_version_request_true
for codec in none gzip snappy lz4 zstd; do
  run_test "-z $codec round trip" codec_round_trip "$codec"
done
for codec in gzip snappy lz4 zstd; do
  run_test "-z $codec batches stored compressed" codec_stored_compressed "$codec"
done
run_test "keys (-K) and headers (-H)" test_key_and_headers
run_test "partitions and offsets (-p, -o N, -o -N, -o s@ts, -c)" test_partition_and_offsets
run_test "envelope for another tenant is refused" test_envelope_for_another_tenant_is_refused
run_test "consumer waits for new records" test_consume_waits_for_new_records

if [ "$failed" -gt 0 ]; then
  echo "failed:"
  printf '  %s\n' "${failures[@]}"
fi
echo "kcat: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
