#!/usr/bin/env bash
# Single-message publishes with the admin key and with an app key (pattern scopes, quotas set
# but never reached), in alternating rounds on one server, with the server's CPU time per request
# read from /proc/<pid>/stat. Bounded: ROUNDS x 2 phases of D seconds.
#
# Environment: OPAL_BIN (default /work/target-bench/release/opal), PORT (7483), D (6), ROUNDS (5),
# WORK_DIR (/work/opal-bench-auth; its data/ is removed at start and end), QUOTAS (the app's
# quotas as JSON; default: every quota, far above reach; `{}` for none).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/http/server.sh
source "$HERE/server.sh"
OPAL_BIN="${OPAL_BIN:-/work/target-bench/release/opal}"
PORT="${PORT:-7483}"; D="${D:-6}"; ROUNDS="${ROUNDS:-5}"
WORK_DIR="${WORK_DIR:-/work/opal-bench-auth}"
export OPAL_ADMIN_KEY="${OPAL_ADMIN_KEY:-bench-admin-key-0123456789}"
BASE="http://127.0.0.1:${PORT}"
A="Authorization: Bearer $OPAL_ADMIN_KEY"
for tool in wrk curl jq; do command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }; done
mkdir -p "$WORK_DIR"; rm -rf "$WORK_DIR/data"
"$OPAL_BIN" serve --http "127.0.0.1:$PORT" --data-dir "$WORK_DIR/data" --fsync always \
  >"$WORK_DIR/server.out" 2>"$WORK_DIR/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK_DIR/data"' EXIT
wait_for_server "$PID" "$BASE" "$WORK_DIR/server.log"
curl -fsS -o /dev/null -X PUT -H "$A" "$BASE/v1/topics/bench"
QUOTAS="${QUOTAS:-{\"publish_messages_per_s\":100000000,\"publish_bytes_per_s\":100000000000,\"stored_bytes\":1000000000000,\"topics\":1000,\"subscriptions\":1000,\"open_streams\":1000\}}"
curl -fsS -o /dev/null -X POST -H "$A" -H 'Content-Type: application/json' "$BASE/v1/apps" \
  -d "{\"name\":\"bench-app\",\"quotas\":$QUOTAS}"
APP_KEY=$(curl -fsS -X POST -H "$A" -H 'Content-Type: application/json' "$BASE/v1/apps/bench-app/keys" \
  -d '{"name":"bench","scopes":["read","manage","publish:orders.*","publish:be*ch"]}' | jq -r .key)
curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $APP_KEY" "$BASE/v1/topics/bench"
cpu() { awk '{print $14+$15}' "/proc/$PID/stat"; }
echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC'), binary $OPAL_BIN, $ROUNDS rounds of ${D}s per key; app quotas $QUOTAS"
for r in $(seq "$ROUNDS"); do
  for who in admin app; do
    key=$OPAL_ADMIN_KEY; [ "$who" = app ] && key=$APP_KEY
    c0=$(cpu)
    res=$(KEY=$key timeout $((D + 30)) wrk -t2 -c64 -d"${D}s" --timeout 10s -s "$HERE/publish.lua" "$BASE" | grep RESULT)
    c1=$(cpu)
    n=$(sed 's/.*requests=\([0-9]*\).*/\1/' <<<"$res"); rps=$(sed 's/.*req_s=\([0-9]*\).*/\1/' <<<"$res")
    bad=$(sed 's/.*non2xx=\([0-9]*\).*/\1/' <<<"$res")
    echo "round $r $who req_s=$rps server_cpu_us_per_req=$(awk -v c=$((c1 - c0)) -v n="$n" 'BEGIN{printf "%.1f", c*10000/n}') non2xx=$bad"
  done
done
