#!/usr/bin/env bash
# Job store statements per small file of a `ferry serve` job (SQLite, the
# embedded default), counted in the SQL driver's statement log (sqlx's
# debug events: one per statement it sent; BEGIN/COMMIT are not in it):
# N files of 100 KiB from the nginx origin into a directory,
# --concurrency 16 --per-job-concurrency 16. Prints the total after
# startup (migrations left out), per file, and each statement kind run at
# least N/20 times. For another build too: FERRY_BENCH_BASELINE=BIN.
#
# Usage: bench/statements.sh [N]        (default: 2000)
# Env:   FERRY_BENCH_DIR (scratch), FERRY_BENCH_BASELINE (another binary).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
tools=""
source bench/lib.sh
api_port=18095

make_set "st-${n}x100" "$n" 100
set_dir="$scratch/srv/st-${n}x100"
list="$scratch/st-list.txt"
ls "$set_dir" | grep '\.bin$' | sed "s|^|http://127.0.0.1:$port/st-${n}x100/|" > "$list"

count() {
  local bin=$1 label=$2 data="$scratch/st-data-$2"
  rm -rf "$data"
  FERRY_LOG=warn,sqlx=debug FERRY_LOG_FORMAT=human "$bin" serve --listen "127.0.0.1:$api_port" \
    --data-dir "$data" --concurrency 16 --per-job-concurrency 16 \
    --allow-source 127.0.0.1 > "$scratch/st-$label.log" 2>&1 &
  local pid=$!
  wait_healthy "$api_port"
  "$bin" job submit --server "http://127.0.0.1:$api_port" --files-from "$list" \
    --destination out/ --wait > /dev/null 2> "$scratch/st-err.log" || {
    cat "$scratch/st-err.log" >&2; kill "$pid"; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local stored
  stored=$(find "$data/files/out" -name '*.bin' | wc -l)
  [ "$stored" -eq "$n" ] || { echo "$label: $stored files stored, not $n" >&2; exit 1; }
  python3 - "$scratch/st-$label.log" "$n" "$label" <<'PY'
import re, sys, collections
log, n, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = collections.Counter()
for line in open(log):
    m = re.search(r'summary="([^"]*)"', line)
    if m:
        c[m.group(1)] += 1
setup = ('PRAGMA', 'CREATE', 'ALTER', 'INSERT INTO ferry_schema', 'SELECT MAX(version)')
work = {k: v for k, v in c.items() if not k.startswith(setup)}
total = sum(work.values())
print(f"{label}: {total} statements for {n} files, {total / n:.2f} per file")
for k, v in sorted(work.items(), key=lambda kv: -kv[1]):
    if v >= n // 20:
        print(f"  {v:7d}  {k}")
PY
}

count "$ferry" ferry
[ -n "${FERRY_BENCH_BASELINE:-}" ] && count "$FERRY_BENCH_BASELINE" base
echo "$("$ferry" --version); $n files x 100 KiB; concurrency 16; $(nproc) cores"
