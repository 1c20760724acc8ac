#!/usr/bin/env bash
# Where the CPU goes during single-message publishes, against the /healthz ceiling: for each
# round and each variant, a fresh server, a /healthz phase then a publish phase, each preceded
# by 1 s of warm-up; around each phase /proc/stat gives the busy CPU time (user, nice, system,
# irq, softirq) and the idle time (idle and iowait) of the whole machine, wrk included.
#
# Usage: bench/http/cpu_split.sh ROUNDS VARIANT...
#   VARIANT  a server binary, optionally followed by `:NAME=VALUE,NAME=VALUE` (environment for
#            that server), e.g. /work/target-bench/release/opal:RUST_LOG=warn
# Prints one line per round and variant, then per variant: the mean of the rounds'
# publish/ceiling ratios with its standard error, the mean idle share of the publish phases
# and the busy CPU time per answered publish. Variants alternate round by round, so that the
# machine's drift (a third of the speed within a minute here) falls on all of them alike.
#
# Environment: DURATION (seconds per phase, default 3), CONNS (default 64), PORT (default
# 7483), FSYNC (default always), WORK_DIR (default /work/opal-bench-cpu; its data/ is removed).
# Needs wrk and curl, and a machine of its own while it runs: every CPU's time is counted.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/http/server.sh
source "$HERE/server.sh"
ROUNDS=${1:?usage: cpu_split.sh ROUNDS VARIANT...}
shift
[ $# -gt 0 ] || { echo "usage: cpu_split.sh ROUNDS VARIANT..." >&2; exit 1; }
DURATION="${DURATION:-3}"
CONNS="${CONNS:-64}"
PORT="${PORT:-7483}"
FSYNC="${FSYNC:-always}"
WORK_DIR="${WORK_DIR:-/work/opal-bench-cpu}"
export OPAL_ADMIN_KEY="${OPAL_ADMIN_KEY:-bench-admin-key-0123456789}"
BASE="http://127.0.0.1:${PORT}"
for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install -y $tool" >&2; exit 1; }
done
mkdir -p "$WORK_DIR"
SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
  rm -rf "$WORK_DIR/data"
}
trap stop_server EXIT

# One phase: prints "requests busy_ticks idle_ticks total_ticks".
phase() { # script, path
  timeout 60 wrk -t2 -c"$CONNS" -d1s -s "$HERE/$1" "$BASE$2" >/dev/null
  local a b out
  read -ra a < <(head -1 /proc/stat)
  out=$(timeout $((DURATION + 30)) wrk -t2 -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$HERE/$1" "$BASE$2" | grep '^RESULT')
  read -ra b < <(head -1 /proc/stat)
  local requests busy=0 idle=0 total=0 i
  requests=$(echo "$out" | sed 's/.*requests=\([0-9]*\).*/\1/')
  for i in 1 2 3 6 7; do busy=$((busy + b[i] - a[i])); done
  for i in 4 5; do idle=$((idle + b[i] - a[i])); done
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  if [ "$(echo "$out" | sed 's/.*non2xx=\([0-9]*\).*/\1/')" != 0 ]; then
    echo "non-2xx answers in $1: $out" >&2
    exit 1
  fi
  echo "$requests $busy $idle $total"
}

RESULTS="$WORK_DIR/cpu_split.results"
: >"$RESULTS"
TICK_US=$((1000000 / $(getconf CLK_TCK)))
for round in $(seq "$ROUNDS"); do
  for variant in "$@"; do
    bin=${variant%%:*}
    env_list=""
    [ "$bin" != "$variant" ] && env_list=$(echo "${variant#*:}" | tr ',' ' ')
    rm -rf "$WORK_DIR/data"
    # shellcheck disable=SC2086 # the variant's environment is a list of words on purpose
    env $env_list "$bin" serve --http "127.0.0.1:${PORT}" --data-dir "$WORK_DIR/data" \
      --fsync "$FSYNC" >/dev/null 2>"$WORK_DIR/server.log" &
    SERVER_PID=$!
    wait_for_server "$SERVER_PID" "$BASE" "$WORK_DIR/server.log"
    curl -fsS -o /dev/null -X PUT -H "Authorization: Bearer $OPAL_ADMIN_KEY" "$BASE/v1/topics/bench"
    ceiling=$(phase healthz.lua /healthz)
    single=$(phase publish.lua /)
    stop_server
    echo "$variant $ceiling $single" | tee -a "$RESULTS" | awk -v d="$DURATION" -v tick="$TICK_US" \
      '{printf "round %s %s: ceiling %d req/s, single %d req/s = %.1f %%; publish phase idle %.1f %%, %.1f us busy CPU per publish\n",
        "'"$round"'", $1, $2/d, $6/d, 100*$6/$2, 100*$8/$9, $7*tick/$6}'
  done
done
echo "# per variant over $ROUNDS rounds: mean ratio ± standard error; publish-phase idle; busy CPU per publish"
awk -v tick="$TICK_US" '
  { v=$1; n[v]++; r=100*$6/$2; s[v]+=r; ss[v]+=r*r; idle[v]+=100*$8/$9; cpu[v]+=$7*tick/$6 }
  END { for (v in n) {
    m=s[v]/n[v]; var=(n[v]>1)?(ss[v]-n[v]*m*m)/(n[v]-1):0; if (var<0) var=0
    printf "%s: %.1f ± %.1f %% of the ceiling; idle %.1f %%; %.1f us per publish (%d rounds)\n",
      v, m, sqrt(var/n[v]), idle[v]/n[v], cpu[v]/n[v], n[v] } }' "$RESULTS"
