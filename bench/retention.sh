#!/usr/bin/env bash
# Retention soak: one `ferry serve --retain-jobs SECONDS` runs job after job
# for MINUTES (default 10): each round submits one job of N small files
# (100 KiB, nginx origin on loopback) into a directory, waits for it, and
# removes the files it wrote (the user's data: ferry never deletes it).
# Every 15 s it samples, from outside the server, the job store's size on
# disk (ferry.db + -wal + -shm, bytes) and how many jobs the API lists.
# Verdict: after the first retention period plus a fifth of the run, the
# store's peak size in the last fifth must not exceed its peak in the
# second fifth by more than 10 % + 1 MiB; the script exits 1 otherwise.
# Writes retention.csv (t_s,store_bytes,jobs_listed,rounds) under
# FERRY_BENCH_OUT.
#
# Usage: bench/retention.sh [MINUTES] [RETAIN_SECONDS]
# Env:   FERRY_RETENTION_FILES (per job, default 50), FERRY_BENCH_DIR,
#        FERRY_BENCH_OUT (default docs/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-10}"
retain="${2:-60}"
n="${FERRY_RETENTION_FILES:-50}"
tools=""
# nginx's workers read the files as another user: a readable scratch.
scratch="${FERRY_BENCH_DIR:-$(mktemp -d)}"
export FERRY_BENCH_DIR="$scratch"
mkdir -p "$scratch/srv/small" && chmod 755 "$scratch" "$scratch/srv" "$scratch/srv/small"
source bench/lib.sh
for i in $(seq 0 $((n - 1))); do
  [ -f "$scratch/srv/small/$i.bin" ] || head -c 102400 /dev/urandom > "$scratch/srv/small/$i.bin"
done
api_port=18094
data="$scratch/retention-serve"
rm -rf "$data"
FERRY_LOG=info "$ferry" serve --listen "127.0.0.1:$api_port" --data-dir "$data" \
  --retain-jobs "${retain}s" --concurrency 16 --per-job-concurrency 16 \
  --allow-source 127.0.0.1 --jobs-per-minute 0 \
  2> "$scratch/retention-serve.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; kill "$(cat "$scratch/nginx.pid")" 2>/dev/null || true' EXIT
wait_healthy "$api_port"

job=$(python3 - "$n" "$port" <<'PY'
import json, sys
n, port = int(sys.argv[1]), sys.argv[2]
files = [{"source": f"http://127.0.0.1:{port}/small/{i}.bin", "key": f"{i}.bin"} for i in range(n)]
print(json.dumps({"destination": "soak", "files": files}))
PY
)
api() { curl -sf "http://127.0.0.1:$api_port$1"; }
store_bytes() { cat "$data"/ferry.db "$data"/ferry.db-wal "$data"/ferry.db-shm 2>/dev/null | wc -c; }
listed() { api "/v1/jobs?limit=1000" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["jobs"]))'; }

csv="$out/retention.csv"
echo "t_s,store_bytes,jobs_listed,rounds" > "$csv"
echo 0 > "$scratch/rounds"
start=$(date +%s)
end=$((start + minutes * 60))
(
  while kill -0 "$pid" 2>/dev/null; do
    printf '%s,%s,%s,%s\n' "$(( $(date +%s) - start ))" "$(store_bytes)" "$(listed)" \
      "$(cat "$scratch/rounds")" >> "$csv"
    sleep 15
  done
) &
sampler=$!
rounds=0
while [ "$(date +%s)" -lt "$end" ]; do
  id=$(curl -sf -H 'content-type: application/json' -d "$job" "http://127.0.0.1:$api_port/v1/jobs" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  while :; do
    st=$(api "/v1/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    case $st in completed|completed_with_errors|failed|cancelled) break ;; esac
    sleep 0.2
  done
  [ "$st" = completed ] || { echo "job $id ended $st" >&2; exit 1; }
  rm -rf "$data/files/soak"
  rounds=$((rounds + 1))
  echo "$rounds" > "$scratch/rounds"
done
sleep 16
kill "$sampler" 2>/dev/null || true
deleted=$(grep -c "retention: ended jobs deleted" "$scratch/retention-serve.log" || true)
python3 - "$csv" "$minutes" "$retain" "$rounds" "$n" "$deleted" <<'PY'
import csv, sys
path, minutes, retain, rounds, n, deleted = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rows = [(int(r["t_s"]), int(r["store_bytes"]), int(r["jobs_listed"])) for r in csv.DictReader(open(path))]
span = minutes * 60
fifth = span / 5
second = [b for t, b, _ in rows if fifth <= t < 2 * fifth]
last = [b for t, b, _ in rows if t >= 4 * fifth]
jobs_last = [j for t, _, j in rows if t >= 4 * fifth]
print(f"rounds: {rounds} jobs of {n} files ({rounds * n} files) in {minutes} min, retention {retain} s, {deleted} deletion passes logged")
print(f"store on disk: peak {max(second) / 2**20:.2f} MiB in the second fifth, {max(last) / 2**20:.2f} MiB in the last; final {rows[-1][1] / 2**20:.2f} MiB")
print(f"jobs listed in the last fifth: {min(jobs_last)}-{max(jobs_last)} (all ever submitted: {rounds})")
ok = max(last) <= max(second) * 1.1 + 2**20
print("verdict:", "flat" if ok else "GROWING")
sys.exit(0 if ok else 1)
PY
