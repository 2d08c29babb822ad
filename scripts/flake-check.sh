#!/usr/bin/env bash
# The twenty-run check of the timing-sensitive tests (issue 19): runs the
# connection-age test, every stream test, and the slowloris and SSRF-matrix
# attack tests RUNS times (default 20) in a row, while a cold release build
# into a second target directory keeps the cores busy. Prints one line per
# run and the number of failed runs; exits 1 if any failed.
# Needs the test Garage (scripts/garage.sh start) like scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
load_target="${FERRY_LOAD_TARGET:-/var/tmp/ferry-load-target}"
eval "$(scripts/garage.sh env)"
rm -rf "$load_target"
CARGO_TARGET_DIR="$load_target" cargo build -q --release --locked -p ferry > /dev/null 2>&1 &
load=$!
fails=0
for i in $(seq 1 "$runs"); do
  busy=$(pgrep -c rustc || true)
  out=$( { cargo test -q --locked -p ferry-tests --test integration connections_are_reused_but_not_past_the_maximum_age 2>&1
           cargo test -q --locked -p ferry --test streams 2>&1
           cargo test -q --locked -p ferry --test attacks -- a_thousand_slowloris ssrf_matrix 2>&1; } )
  if echo "$out" | grep -qE "FAILED|panicked"; then
    fails=$((fails + 1))
    echo "run $i: FAILED (rustc processes at start: $busy)"
    echo "$out" | grep -E "panicked|FAILED" | head -5
  else
    echo "run $i: ok (rustc processes at start: $busy)"
  fi
done
kill "$load" 2> /dev/null
echo "failed runs: $fails of $runs"
[ "$fails" -eq 0 ]
