#!/usr/bin/env bash
# The Prometheus alerting rules in deploy/prometheus/alerts.yml, checked with promtool:
#
#   1. `promtool check rules` (syntax, templates);
#   2. `promtool test rules compat/prometheus/alerts_test.yml`: HighConsumerLag fires for
#      kafka_consumer_lag > 1000 held for 5 minutes, and only then;
#   3. against the running herald (HERALD_HTTP, HERALD_API_KEY, as compat/run exports them): a
#      group made to lag 1001 records and one lagging exactly 1000, through the HTTP API; its
#      /metrics must pass `promtool check metrics`, and the scraped kafka_consumer_lag samples,
#      fed to the rule, must fire HighConsumerLag for the first group only.
#
# promtool comes from Debian's `prometheus` package, installed here if missing (without its
# recommended node exporter; in a container its service is not started).
set -uo pipefail

COMPAT="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$COMPAT/.." && pwd)"
RULES="$ROOT/deploy/prometheus/alerts.yml"

if ! command -v promtool >/dev/null 2>&1; then
  printf '\n==> installing promtool (Debian package prometheus)\n'
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends prometheus >/dev/null; then
    apt-get update -q >/dev/null || true
    apt-get install -y -q --no-install-recommends prometheus >/dev/null || {
      echo "prometheus.sh: cannot install the Debian package prometheus (for promtool)" >&2
      exit 1
    }
  fi
  command -v promtool >/dev/null 2>&1 || {
    echo "prometheus.sh: promtool is not on PATH after installing prometheus" >&2
    exit 1
  }
fi
promtool --version 2>&1 | head -n1

failed=0
check() {
  local what="$1"
  shift
  if "$@"; then
    echo "ok    $what"
  else
    echo "FAIL  $what" >&2
    failed=$((failed + 1))
  fi
}

check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules "$RULES"
check "promtool test rules compat/prometheus/alerts_test.yml" \
  promtool test rules "$COMPAT/prometheus/alerts_test.yml"

# --- against herald ---------------------------------------------------------------------------

if [ -z "${HERALD_HTTP:-}" ] || [ -z "${HERALD_API_KEY:-}" ]; then
  echo "prometheus.sh: HERALD_HTTP / HERALD_API_KEY not set: skipping the checks against herald"
  [ "$failed" -eq 0 ]
  exit
fi

TMP="$(mktemp -d -t herald-prometheus.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
TOPIC="smarteros.76953480-3.compat.lag_alert_$$"
LAGGING="lag-alert-$$"  # committed 0 of 1001: lag 1001
AT_LIMIT="lag-limit-$$" # committed 1 of 1001: lag 1000, not above

api() { # METHOD PATH [JSON-FILE]
  local args=(-sS -o "$TMP/body" -w '%{http_code}' -X "$1" -H "X-API-Key: $HERALD_API_KEY")
  [ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "@$3")
  curl "${args[@]}" "$HERALD_HTTP$2"
}
expect() { # STATUS METHOD PATH [JSON-FILE]
  local want="$1" got
  shift
  got="$(api "$@")"
  if [ "$got" != "$want" ]; then
    echo "$1 $2: HTTP $got, expected $want: $(cat "$TMP/body")" >&2
    return 1
  fi
}

setup_lag() {
  printf '{"name":"%s","partitions":1}' "$TOPIC" >"$TMP/topic.json"
  expect 201 POST /v1/topics "$TMP/topic.json" || return 1
  # 1001 records, in requests of at most 1000.
  python3 - "$TMP" <<'PY' || return 1
import json, sys
for name, rng in (("a", range(0, 600)), ("b", range(600, 1001))):
    with open(f"{sys.argv[1]}/records-{name}.json", "w") as f:
        json.dump({"partition": 0, "records": [{"value": {"n": i}} for i in rng]}, f)
PY
  expect 200 POST "/v1/topics/$TOPIC/records" "$TMP/records-a.json" || return 1
  expect 200 POST "/v1/topics/$TOPIC/records" "$TMP/records-b.json" || return 1
  # Groups without members: reset-offsets commits for them.
  printf '{"topics":"%s","strategy":"earliest"}' "$TOPIC" >"$TMP/reset-0.json"
  printf '{"topics":"%s","strategy":"offset","value":1}' "$TOPIC" >"$TMP/reset-1.json"
  expect 200 POST "/v1/groups/$LAGGING/reset-offsets" "$TMP/reset-0.json" || return 1
  expect 200 POST "/v1/groups/$AT_LIMIT/reset-offsets" "$TMP/reset-1.json" || return 1
  curl -fsS "$HERALD_HTTP/metrics" >"$TMP/metrics.txt"
}

lint_metrics() {
  promtool check metrics <"$TMP/metrics.txt"
}

# The scraped samples of both groups, as a unit test of the rule: constant for 10 minutes,
# HighConsumerLag firing at 5m for the lagging group only.
scraped_samples_fire_alert() {
  python3 - "$TMP" "$RULES" "$LAGGING" "$AT_LIMIT" "$TOPIC" <<'PY' || return 1
import json, re, sys
tmp, rules, lagging, at_limit, topic = sys.argv[1:]
samples = {}
for line in open(f"{tmp}/metrics.txt"):
    m = re.match(r'^kafka_consumer_lag\{(.*)\} (\S+)$', line.strip())
    if not m:
        continue
    labels = dict(re.findall(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"', m.group(1)))
    if labels.get("group") in (lagging, at_limit):
        samples[labels["group"]] = (labels, m.group(2))
want = {lagging: "1001", at_limit: "1000"}
got = {g: v for g, (_, v) in samples.items()}
if got != want:
    sys.exit(f"scraped kafka_consumer_lag samples {got}, expected {want}")
def series(labels):
    return "kafka_consumer_lag{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
lag_labels = samples[lagging][0]
test = {
    "rule_files": [rules],
    "evaluation_interval": "1m",
    "tests": [{
        "interval": "1m",
        "input_series": [{"series": series(l), "values": f"{v}x10"} for l, v in samples.values()],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "HighConsumerLag", "exp_alerts": []},
            {"eval_time": "5m", "alertname": "HighConsumerLag", "exp_alerts": [{
                "exp_labels": dict(lag_labels, severity="warning"),
                "exp_annotations": {"summary": f"Consumer {lagging} is lagging"},
            }]},
        ],
    }],
}
json.dump(test, open(f"{tmp}/scraped_test.yml", "w"), indent=1)  # JSON is YAML
print(f"scraped: {series(lag_labels)} {samples[lagging][1]}")
PY
  promtool test rules "$TMP/scraped_test.yml"
}

if check "herald: a group lagging 1001 records and one lagging 1000 (HTTP API)" setup_lag; then
  check "herald: GET /metrics passes promtool check metrics" lint_metrics
  check "herald: scraped kafka_consumer_lag fires HighConsumerLag (lag 1001) and not at 1000" \
    scraped_samples_fire_alert
fi

[ "$failed" -eq 0 ]
