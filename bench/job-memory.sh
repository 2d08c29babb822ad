#!/usr/bin/env bash
# Memory of a `ferry serve` process over one job of many small files:
# N files of 10 KiB from the nginx origin into a directory (SQLite, the
# embedded default), --concurrency 16 --per-job-concurrency 16. Samples
# the server's VmRSS from /proc every 50 ms from before the submission to
# after the job's end, and prints its peak (VmHWM), the RSS once the job
# was accepted, and a sample about every second, so that where the memory
# goes (submission, run, completion) shows. For another build too, in the
# same run: FERRY_BENCH_BASELINE=BIN.
#
# Usage: bench/job-memory.sh [N]       (default: 20000)
# Env:   FERRY_BENCH_DIR (scratch), FERRY_BENCH_BASELINE (another binary),
#        FERRY_BENCH_ROUNDS (default 2: each build that many times, alternated).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
rounds="${FERRY_BENCH_ROUNDS:-2}"
scratch="${FERRY_BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$scratch/srv"
cargo build --release --locked -p ferry >&2
ferry="${CARGO_TARGET_DIR:-target}/release/ferry"
port=18097 api_port=18098
source bench/nginx.sh
start_nginx "$port" 2
trap 'kill "$(cat "$scratch/nginx.pid")" 2>/dev/null || true' EXIT

make_set "mem-$n" "$n" 10
set_dir="$scratch/srv/mem-$n"
list="$scratch/mem-list.txt"
ls "$set_dir" | grep '\.bin$' | sed "s|^|http://127.0.0.1:$port/mem-$n/|" > "$list"

measure() {
  local bin=$1 label=$2 data="$scratch/mem-data"
  rm -rf "$data"
  FERRY_LOG=warn "$bin" serve --listen "127.0.0.1:$api_port" --data-dir "$data" \
    --concurrency 16 --per-job-concurrency 16 --max-files-per-job 1000000 --max-body 256MiB \
    --allow-source 127.0.0.1 > "$scratch/mem-serve.log" 2>&1 &
  local pid=$!
  wait_healthy "$api_port"
  local samples="$scratch/mem-rss.txt"
  : > "$samples"
  ( while kill -0 "$pid" 2>/dev/null; do
      echo "$(date +%s.%N) $(awk '/VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)" >> "$samples"
      sleep 0.05
    done ) &
  local sampler=$!
  local start accepted
  start=$(date +%s.%N)
  "$bin" job submit --server "http://127.0.0.1:$api_port" --files-from "$list" \
    --destination out/ > "$scratch/mem-submit.json"
  accepted=$(date +%s.%N)
  local id
  id=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['id'])" "$scratch/mem-submit.json")
  until curl -sf "http://127.0.0.1:$api_port/v1/jobs/$id" | python3 -c \
      "import json,sys; sys.exit(json.load(sys.stdin)['status'] not in ('completed', 'completed_with_errors', 'failed', 'cancelled'))"; do
    sleep 0.1
  done
  local ended
  ended=$(date +%s.%N)
  sleep 0.5
  local hwm
  hwm=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  local stored
  stored=$(find "$data/files/out" -name '*.bin' | wc -l)
  [ "$stored" -eq "$n" ] || { echo "$label: $stored files stored, not $n" >&2; exit 1; }
  python3 - "$samples" "$label" "$n" "$hwm" "$start" "$accepted" "$ended" <<'PY'
import sys
path, label, n, hwm, start, accepted, ended = sys.argv[1:]
start, accepted, ended = float(start), float(accepted), float(ended)
pts = []
for line in open(path):
    p = line.split()
    if len(p) == 2 and p[1].isdigit():
        pts.append((float(p[0]) - start, int(p[1]) / 1024))
after = [r for t, r in pts if t >= accepted - start]
print(f"{label}: {n} files, accepted after {accepted - start:.2f} s, ended after {ended - start:.2f} s; "
      f"peak RSS (VmHWM) {int(hwm) / 1024:.1f} MiB; RSS once accepted {after[0] if after else 0:.1f} MiB")
print("  RSS MiB about every second:", " ".join(f"{t:.0f}s:{r:.0f}" for t, r in pts[::20] if t >= 0))
PY
}

for _ in $(seq "$rounds"); do
  measure "$ferry" ferry
  [ -n "${FERRY_BENCH_BASELINE:-}" ] && measure "$FERRY_BENCH_BASELINE" base
done
echo "$("$ferry" --version); $n files x 10 KiB; concurrency 16; $(nproc) cores"
