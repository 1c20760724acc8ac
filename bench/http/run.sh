#!/usr/bin/env bash
# HTTP publish throughput against the HTTP ceiling of the same server, in one run.
#
# Starts `opal serve` (fsync `always`, a fresh data directory on /work), creates a topic, then
# runs wrk over loopback with keep-alive:
#   1. GET /healthz                         - the ceiling: same server stack, trivial handler
#   2. GET /v1/topics/bench                 - a reference: authenticated and access-logged like
#                                             a publish, but stores nothing (REFERENCE=0 skips it)
#   3. single-message JSON publishes        - 64 connections
#      (with PAIRS=N, steps 1 and 3 alternate N times, ceiling then publishes, before step 2:
#      each publish phase is compared with the ceiling measured just before it)
#   4. 100-message JSON batches of 256 B    - $BATCH_CONNS connections
#   5. single-message publishes, alternately with the admin key and with an app key that has
#      pattern scopes and quotas set high enough never to be reached, APP_ROUNDS times each
#      (APP_ROUNDS=0 skips them): what authorization and quota checks cost
# and prints requests/s, messages/s, payload MB/s and latency percentiles, then stops the server.
# Every step is bounded in time. wrk and the server share the machine's cores.
# Needs wrk, curl and jq (Debian packages) and a release build of the server.
#
# Environment (all optional):
#   OPAL_BIN      server binary (default /work/target-bench/release/opal)
#   PORT          loopback port (default 7480)
#   DURATION      seconds per wrk phase (default 20)
#   PAIRS         alternations of ceiling and single publishes (default 1). This machine's speed
#                 can change by a third within a minute; short alternating phases keep each
#                 ratio's two halves in the same conditions.
#   THREADS       wrk threads (default 2)
#   CONNS         connections for the ceiling and single publishes (default 64)
#   BATCH         messages per batched request (default 100)
#   BATCH_CONNS   connections for batches (default 32)
#   REFERENCE     1 (default) to measure GET /v1/topics/bench as well
#   APP_ROUNDS    rounds of admin-key / app-key single publishes (default 3)
#   APP_DURATION  seconds per phase of those rounds (default 10)
#   WORK_DIR      where the data directory and server log go (default /work/opal-bench-http;
#                 its data/ is removed at the start, and at the end unless KEEP=1)
#   RUST_LOG      server log filter (unset: the server's default, `info`)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/http/server.sh
source "$HERE/server.sh"
OPAL_BIN="${OPAL_BIN:-/work/target-bench/release/opal}"
PORT="${PORT:-7480}"
DURATION="${DURATION:-20}"
THREADS="${THREADS:-2}"
CONNS="${CONNS:-64}"
BATCH="${BATCH:-100}"
BATCH_CONNS="${BATCH_CONNS:-32}"
WORK_DIR="${WORK_DIR:-/work/opal-bench-http}"
export OPAL_ADMIN_KEY="${OPAL_ADMIN_KEY:-bench-admin-key-0123456789}"
BASE="http://127.0.0.1:${PORT}"
AUTH="Authorization: Bearer ${OPAL_ADMIN_KEY}"

for tool in wrk curl jq; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install -y $tool" >&2; exit 1; }
done
[ -x "$OPAL_BIN" ] || { echo "no server binary at $OPAL_BIN (cargo build --release --bin opal)" >&2; exit 1; }

mkdir -p "$WORK_DIR"
rm -rf "$WORK_DIR/data"
LOG="$WORK_DIR/server.log"
SERVER_PID=""

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK_DIR/data"
}
trap stop_server EXIT

echo "# opal HTTP publish benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "# $(nproc) CPUs; $(uname -r); binary $OPAL_BIN; source tree at $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$HERE" status --porcelain 2>/dev/null | grep -q . && echo ' (modified)')"
echo "# data dir $WORK_DIR/data on $(df -P "$WORK_DIR" | awk 'NR==2{print $1}'); server log $LOG"
echo "# duration ${DURATION}s/phase, wrk threads $THREADS, conns $CONNS (ceiling, single), $BATCH_CONNS (batch of $BATCH)"

"$OPAL_BIN" serve --http "127.0.0.1:${PORT}" --data-dir "$WORK_DIR/data" --fsync always \
  >"$WORK_DIR/server.out" 2>"$LOG" &
SERVER_PID=$!
wait_for_server "$SERVER_PID" "$BASE" "$LOG"
grep -q "fsync:    always" "$WORK_DIR/server.out" || { echo "server is not on fsync=always" >&2; exit 1; }

curl -fsS -o /dev/null -X PUT -H "$AUTH" "$BASE/v1/topics/bench"

# An app with quotas far above what this machine can reach, and a key with pattern scopes; its
# topic `bench` is the app's own (stored as bench-app/bench), beside the admin's.
APP_ROUNDS="${APP_ROUNDS:-3}"
APP_DURATION="${APP_DURATION:-10}"
if [ "$APP_ROUNDS" -gt 0 ]; then
  curl -fsS -o /dev/null -X POST -H "$AUTH" -H 'Content-Type: application/json' "$BASE/v1/apps" \
    -d '{"name": "bench-app", "quotas": {"publish_messages_per_s": 100000000,
         "publish_bytes_per_s": 100000000000, "stored_bytes": 1000000000000,
         "topics": 1000, "subscriptions": 1000, "open_streams": 1000}}'
  APP_KEY=$(curl -fsS -X POST -H "$AUTH" -H 'Content-Type: application/json' \
    "$BASE/v1/apps/bench-app/keys" \
    -d '{"name": "bench", "scopes": ["read", "manage", "publish:orders.*", "publish:be*ch", "consume:*"]}' \
    | jq -r .key)
  curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $APP_KEY" "$BASE/v1/topics/bench"
fi

run_wrk() { # label, connections, script, extra env...
  local label=$1 conns=$2 script=$3
  shift 3
  echo "# $label: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  env "$@" timeout $((DURATION + 30)) \
    wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --timeout 10s -s "$HERE/$script" "$BASE${WRK_PATH:-/}" \
    | grep '^RESULT' | tee -a "$WORK_DIR/results"
}

: >"$WORK_DIR/results"
PAIRS="${PAIRS:-1}"
if [ "$PAIRS" = 1 ]; then
  WRK_PATH=/healthz run_wrk ceiling "$CONNS" healthz.lua
  [ "${REFERENCE:-1}" = 1 ] && run_wrk topic_get "$CONNS" topic.lua
  run_wrk single "$CONNS" publish.lua BATCH=1
else
  for pair in $(seq "$PAIRS"); do
    WRK_PATH=/healthz run_wrk "ceiling_$pair" "$CONNS" healthz.lua LABEL="ceiling_$pair"
    run_wrk "single_$pair" "$CONNS" publish.lua BATCH=1 LABEL="single_$pair"
  done
  [ "${REFERENCE:-1}" = 1 ] && run_wrk topic_get "$CONNS" topic.lua
fi
run_wrk batch "$BATCH_CONNS" publish.lua BATCH="$BATCH"
for round in $(seq "$APP_ROUNDS"); do
  DURATION=$APP_DURATION run_wrk "admin_key_$round" "$CONNS" publish.lua BATCH=1 LABEL="admin_key_$round"
  DURATION=$APP_DURATION run_wrk "app_key_$round" "$CONNS" publish.lua BATCH=1 LABEL="app_key_$round" KEY="$APP_KEY"
done

# What the broker says it stored, as a check that the publishes were real: at least the
# answered publishes (requests still in flight when wrk stopped may have been stored too).
stored=$(curl -fsS -H "$AUTH" "$BASE/v1/topics/bench" | jq -r '.stats.published_messages')
app_stored=0
[ "$APP_ROUNDS" -gt 0 ] && app_stored=$(curl -fsS -H "Authorization: Bearer $APP_KEY" "$BASE/v1/topics/bench" | jq -r '.stats.published_messages')
stop_server

field() { grep "^RESULT $1 " "$WORK_DIR/results" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", 100*a/b}'; }
batch_msgs=$(field batch"$BATCH" msg_s)
batch_mb=$(field batch"$BATCH" mb_s)
if [ "$PAIRS" = 1 ]; then
  ceiling=$(field ceiling req_s)
  single=$(field single req_s)
  answered=$(field single requests)
else
  # Means over the pairs; the ratio is of the sums, so each pair weighs by its duration alike.
  ceiling_sum=0 single_sum=0 answered=0 ratios=""
  for pair in $(seq "$PAIRS"); do
    c=$(field "ceiling_$pair" req_s) p=$(field "single_$pair" req_s)
    ceiling_sum=$((ceiling_sum + c)) single_sum=$((single_sum + p))
    answered=$((answered + $(field "single_$pair" requests)))
    ratios="$ratios $(pct "$p" "$c")"
  done
  ceiling=$((ceiling_sum / PAIRS)) single=$((single_sum / PAIRS))
  echo "# pairs: single / ceiling per pair (%):$ratios"
fi
answered=$(( answered + BATCH * $(field batch"$BATCH" requests) ))
app_answered=0
admin_sum=0
app_sum=0
for round in $(seq "$APP_ROUNDS"); do
  answered=$(( answered + $(field "admin_key_$round" requests) ))
  app_answered=$(( app_answered + $(field "app_key_$round" requests) ))
  admin_sum=$(( admin_sum + $(field "admin_key_$round" req_s) ))
  app_sum=$(( app_sum + $(field "app_key_$round" req_s) ))
done
echo "# stored: $stored messages; answered publishes: $answered messages (admin key);" \
  "app key: $app_stored stored, $app_answered answered"
if [ "${REFERENCE:-1}" = 1 ]; then
  reference=$(field topic_get req_s)
  echo "# reference: GET /v1/topics/bench ${reference} req/s = $(pct "$reference" "$ceiling") % of ceiling"
fi
[ "$PAIRS" = 1 ] || echo "# means over $PAIRS pairs of ${DURATION}s:"
echo "# summary: ceiling ${ceiling} req/s; single ${single} req/s = $(pct "$single" "$ceiling") % of ceiling (target >= 50 %);" \
  "batch${BATCH} ${batch_msgs} msg/s, ${batch_mb} MB/s of payload (target >= 200000 msg/s)"
if [ "$APP_ROUNDS" -gt 0 ]; then
  echo "# app key vs admin key, single publishes over $APP_ROUNDS alternating rounds of ${APP_DURATION}s:" \
    "admin $((admin_sum / APP_ROUNDS)) req/s, app $((app_sum / APP_ROUNDS)) req/s (mean) =" \
    "$(pct "$app_sum" "$admin_sum") % (target >= 95 %)"
fi
status=0
for label in $(cut -d' ' -f2 "$WORK_DIR/results"); do
  if [ "$(field "$label" non2xx)" != 0 ] || [ "$(field "$label" socket_errors)" != 0 ]; then
    echo "# WARNING: $label had errors (non2xx or socket errors): its figures are not valid" >&2
    status=1
  fi
done
[ "$stored" -ge "$answered" ] || { echo "# WARNING: fewer messages stored than answered" >&2; status=1; }
[ "$app_stored" -ge "$app_answered" ] || { echo "# WARNING: fewer app messages stored than answered" >&2; status=1; }
exit $status
