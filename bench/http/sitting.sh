#!/usr/bin/env bash
# A sitting: bench/http/run.sh several times in a row, each run with its own alternating
# ceiling and single-publish phases, then the publish/ceiling ratio over every pair of the
# sitting. One run's ratio moves by several points on this kind of shared machine; the
# target (single publishes >= 50 % of the ceiling) is judged on a sitting.
#
# Usage: bench/http/sitting.sh RUNS [BINARY...]
#   RUNS     runs per binary (each about a minute with the defaults below)
#   BINARY   server binaries to compare, alternated run by run so that the machine's drift
#            falls on all of them alike (default: $OPAL_BIN, else
#            /work/target-bench/release/opal)
# Environment: DURATION (default 5), PAIRS (default 5), OUT_DIR (default
# /work/opal-bench-sitting; each run's output is kept there as <binary name>-<run>.txt),
# SUMMARY_ONLY=1 (summarize the runs already in OUT_DIR instead of running), and run.sh's own
# (PORT, CONNS, ...). REFERENCE=1 and APP_ROUNDS=0 are set for every run.
# Prints one line per run, then per binary: the ratio of the summed rates over all pairs,
# the mean of the pairs' ratios with its standard error, the runs' range, how many pairs
# reached 50 %, and the range of the batch rates. Exits non-zero if a run failed (errors,
# or fewer messages stored than answered); the ratio decides nothing about the exit status.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNS=${1:?usage: sitting.sh RUNS [BINARY...]}
shift
[ "$RUNS" -ge 1 ] 2>/dev/null || { echo "RUNS must be a positive number" >&2; exit 1; }
if [ $# -eq 0 ]; then
  set -- "${OPAL_BIN:-/work/target-bench/release/opal}"
fi
names=$(for bin in "$@"; do basename "$bin"; done)
[ "$(sort -u <<<"$names" | wc -l)" -eq $# ] || { echo "binaries need distinct file names" >&2; exit 1; }
OUT_DIR="${OUT_DIR:-/work/opal-bench-sitting}"
mkdir -p "$OUT_DIR"
export DURATION="${DURATION:-5}" PAIRS="${PAIRS:-5}" REFERENCE=1 APP_ROUNDS=0
[ "$PAIRS" -ge 2 ] || { echo "PAIRS must be at least 2 (alternating phases)" >&2; exit 1; }

failed=0
[ "${SUMMARY_ONLY:-0}" = 1 ] || for run in $(seq "$RUNS"); do
  for bin in "$@"; do
    out="$OUT_DIR/$(basename "$bin")-$run.txt"
    if ! OPAL_BIN="$bin" bash "$HERE/run.sh" >"$out" 2>&1; then
      echo "run $run of $bin failed (see $out)" >&2
      failed=1
    fi
    echo "$(basename "$bin") run $run: $(grep -E '^# summary' "$out" | sed 's/^# summary: //')"
  done
done

# Per binary: each pair's ceiling and single rates, from the RESULT lines of its runs.
echo "# sitting of $RUNS run(s) per binary, $PAIRS pairs of ${DURATION}s per run:"
for bin in "$@"; do
  name=$(basename "$bin")
  for run in $(seq "$RUNS"); do
    [ -f "$OUT_DIR/$name-$run.txt" ] || continue
    awk -v run="$run" '
      /^RESULT (ceiling|single)_[0-9]+ / {
        split($2, label, "_"); sub(/^req_s=/, "", $5)
        rate[label[1], label[2]] = $5; pairs[label[2]] = 1
      }
      /^RESULT batch[0-9]+ / { sub(/^msg_s=/, "", $6); print "batch", run, $6 }
      END { for (p in pairs) print "pair", run, rate["ceiling", p], rate["single", p] }
    ' "$OUT_DIR/$name-$run.txt"
  done | awk -v name="$name" '
    $1 == "batch" { b = $3 + 0; if (nb == 0 || b < bmin) bmin = b; if (b > bmax) bmax = b; nb++ }
    $1 == "pair" && $3 > 0 {
      c[$2] += $3; s[$2] += $4; C += $3; S += $4
      r = 100 * $4 / $3; n++; sum += r; sq += r * r; if (r >= 50) at50++
    }
    END {
      if (n < 2) { print name ": fewer than two pairs measured"; exit 1 }
      lo = 1e9; hi = 0
      for (run in c) { rr = 100 * s[run] / c[run]; if (rr < lo) lo = rr; if (rr > hi) hi = rr }
      mean = sum / n; sd = sqrt((sq - n * mean * mean) / (n - 1))
      printf "%s: single / ceiling %.1f %% over %d pairs (ceiling %.0f req/s, single %.0f req/s, means); mean pair %.1f ± %.1f %% (standard error); runs %.1f-%.1f %%; %d of %d pairs at 50 %% or more; batches %d-%d msg/s\n",
        name, 100 * S / C, n, C / n, S / n, mean, sd / sqrt(n), lo, hi, at50 + 0, n, bmin, bmax
    }' || failed=1
done
exit $failed
