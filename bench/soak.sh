#!/usr/bin/env bash
# Soak: one `ferry serve --memory-budget 32MiB` runs job after job for
# MINUTES (default 30): each round submits one job of N files to Garage and
# one of N files to a directory (nginx origin on loopback), plus a file that
# fails (404), waits for both, deletes what they stored. RSS, open file
# descriptors and threads of the server are sampled every 5 s.
# Verdict: after a warm-up (the first fifth), the peak RSS and descriptor
# count of the last fifth must not exceed those of the second fifth by more
# than 8 MiB / 4 descriptors; the script exits 1 otherwise.
# Writes soak.csv (t_s,rss_mib,fds,threads,rounds) under FERRY_BENCH_OUT.
#
# Usage: bench/soak.sh [MINUTES]
# Env:   FERRY_SOAK_FILES (per job, default 10), FERRY_SOAK_S3_MIB (16),
#        FERRY_SOAK_DIR_MIB (64), FERRY_BENCH_BUDGET (32MiB),
#        FERRY_BENCH_DIR (scratch), FERRY_BENCH_OUT (default docs/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-30}"
n="${FERRY_SOAK_FILES:-10}"
s3_mib="${FERRY_SOAK_S3_MIB:-16}"
dir_mib="${FERRY_SOAK_DIR_MIB:-64}"
budget="${FERRY_BENCH_BUDGET:-32MiB}"
tools=""
source bench/lib.sh
for mib in "$s3_mib" "$dir_mib"; do
  f="$scratch/srv/soak-$mib.bin"
  [ -f "$f" ] || head -c "$((mib * 1024 * 1024))" /dev/urandom > "$f"
done
s3_sha=$(sha256sum "$scratch/srv/soak-$s3_mib.bin" | cut -d' ' -f1)
dir_sha=$(sha256sum "$scratch/srv/soak-$dir_mib.bin" | cut -d' ' -f1)
api_port=18093
data="$scratch/soak-serve"
rm -rf "$data"
FERRY_LOG=warn "$ferry" serve --listen "127.0.0.1:$api_port" --data-dir "$data" \
  --memory-budget "$budget" --concurrency "$n" --per-job-concurrency "$n" \
  --allow-source 127.0.0.1 --jobs-per-minute 0 --endpoint-url "$AWS_ENDPOINT_URL" \
  2> "$scratch/soak-serve.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; kill "$(cat "$scratch/nginx.pid")" 2>/dev/null || true' EXIT
wait_healthy "$api_port"

# job DEST MIB SHA: the JSON of one job of n files plus one 404.
job() {
  local dest=$1 mib=$2 sha=$3
  python3 - "$dest" "$mib" "$sha" "$n" "$port" <<'PY'
import json, sys
dest, mib, sha, n, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
files = [{"source": f"http://127.0.0.1:{port}/soak-{mib}.bin", "key": f"f{i}.bin", "sha256": sha} for i in range(n)]
files.append({"source": f"http://127.0.0.1:{port}/missing.bin", "key": "missing.bin"})
print(json.dumps({"destination": dest, "files": files}))
PY
}
submit() { curl -sf -H 'content-type: application/json' -d "$1" "http://127.0.0.1:$api_port/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
status() { curl -s "http://127.0.0.1:$api_port/v1/jobs/$1" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["status"], j["summary"]["succeeded"])'; }

csv="$out/soak.csv"
echo "t_s,rss_mib,fds,threads,rounds" > "$csv"
rounds=0
start=$(date +%s)
end=$((start + minutes * 60))
(
  while kill -0 "$pid" 2>/dev/null; do
    printf '%s,%s,%s,%s,%s\n' "$(( $(date +%s) - start ))" \
      "$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")" \
      "$(ls "/proc/$pid/fd" | wc -l)" \
      "$(awk '/Threads/ {print $2}' "/proc/$pid/status")" \
      "$(cat "$scratch/rounds" 2>/dev/null || echo 0)" >> "$csv"
    sleep 5
  done
) &
sampler=$!
while [ "$(date +%s)" -lt "$end" ]; do
  a=$(submit "$(job "s3://$bucket/soak" "$s3_mib" "$s3_sha")")
  b=$(submit "$(job "soak" "$dir_mib" "$dir_sha")")
  for id in "$a" "$b"; do
    while :; do
      read -r st ok < <(status "$id")
      case $st in completed|completed_with_errors|failed|cancelled) break ;; esac
      sleep 0.5
    done
    if [ "$st" != completed_with_errors ] || [ "$ok" != "$n" ]; then
      echo "soak: job $id ended $st with $ok of $n files; see $scratch/soak-serve.log" >&2
      exit 1
    fi
  done
  aws s3 rm "s3://$bucket/soak/" --recursive --endpoint-url "$AWS_ENDPOINT_URL" --only-show-errors || true
  rm -rf "$data/files/soak"
  rounds=$((rounds + 1))
  echo "$rounds" > "$scratch/rounds"
done
sleep 6
kill "$sampler" 2>/dev/null || true
python3 bench/plot_soak.py "$csv" "$out/soak.png" || true

python3 - "$csv" "$rounds" "$n" "$s3_mib" "$dir_mib" <<'PY'
import csv, sys
path, rounds, n, s3_mib, dir_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rows = [r for r in csv.DictReader(open(path)) if r["rss_mib"]]
t_end = float(rows[-1]["t_s"])
def window(a, b):
    return [r for r in rows if a * t_end <= float(r["t_s"]) <= b * t_end]
early, late = window(0.2, 0.4), window(0.8, 1.0)
peak = lambda w, k: max(float(r[k]) for r in w)
rss_growth = peak(late, "rss_mib") - peak(early, "rss_mib")
fd_growth = peak(late, "fds") - peak(early, "fds")
gib = rounds * n * (s3_mib + dir_mib) / 1024
print(f"soak: {t_end/60:.1f} min, {rounds} rounds, {rounds * 2} jobs, {rounds * 2 * (n + 1)} files ({gib:.1f} GiB)")
print(f"peak RSS: {peak(rows, 'rss_mib'):.1f} MiB overall; {peak(early, 'rss_mib'):.1f} MiB in the 2nd fifth, {peak(late, 'rss_mib'):.1f} MiB in the last (growth {rss_growth:+.1f} MiB)")
print(f"open fds: {peak(early, 'fds'):.0f} in the 2nd fifth, {peak(late, 'fds'):.0f} in the last (growth {fd_growth:+.0f}); threads {peak(rows, 'threads'):.0f} max")
ok = rss_growth <= 8 and fd_growth <= 4
print("verdict:", "no growth" if ok else "GROWTH")
sys.exit(0 if ok else 1)
PY
