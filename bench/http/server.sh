# Shared by the scripts of bench/http (sourced): waiting for a server started in the background.

# wait_for_server PID BASE_URL LOG: returns once BASE_URL/healthz answers; exits with the log
# on stderr if the process ends first, or after 10 s.
wait_for_server() {
  local pid=$1 base=$2 log=$3
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "$base/healthz" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "server exited:" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  echo "server not ready after 10 s:" >&2
  cat "$log" >&2
  exit 1
}
