#!/usr/bin/env bash
# Stress benchmark: N concurrent 1 GiB URL -> S3 transfers (nginx origin and
# Garage on loopback) for each N, ferry against the tools people use today:
#   ferry serve --memory-budget BUDGET: one job of N files (SHA-256 given
#     and verified, MD5 computed), all admitted at once; the server's RSS
#     sampled every second, and /readyz's backpressure level, score and
#     per-chunk latency p95 over time;
#   rclone copyurl, curl | aws s3 cp -: N processes at once (the sum of
#     their peaks is their RSS).
# Prints a table (seconds, aggregate MB/s, peak RSS, chunk latency p95,
# highest level) and writes results.csv, timeline-N.csv and stress.png
# (RSS and throughput against concurrency) under FERRY_BENCH_OUT.
#
# Usage: bench/stress.sh [N...]          (default: 10 25 50)
# Env:   FERRY_BENCH_BUDGET (default 32MiB), FERRY_BENCH_TOOLS (default
#        "ferry rclone awscli"), FERRY_BENCH_DIR (scratch),
#        FERRY_BENCH_OUT (default docs/bench), FERRY_BENCH_SETTLE (s, 20).
set -euo pipefail
cd "$(dirname "$0")/.."
levels=("$@")
[ ${#levels[@]} -eq 0 ] && levels=(10 25 50)
budget="${FERRY_BENCH_BUDGET:-32MiB}"
tools="${FERRY_BENCH_TOOLS:-ferry rclone awscli}"
source bench/lib.sh
make_source 1
name=bench-1g.bin
sha=$(cat "$scratch/srv/$name.sha256")
api_port=18092

# ferry_stress N: one `ferry serve`, one job of N files; prints
# "seconds peak_rss_mib p95_ms max_level" and writes timeline-N.csv.
ferry_stress() {
  local n=$1 data="$scratch/serve-$n" timeline="$out/timeline-$n.csv"
  rm -rf "$data"
  FERRY_LOG=warn "$ferry" serve --listen "127.0.0.1:$api_port" --data-dir "$data" \
    --memory-budget "$budget" --concurrency "$n" --per-job-concurrency "$n" \
    --allow-source 127.0.0.1 --jobs-per-minute 0 --endpoint-url "$AWS_ENDPOINT_URL" \
    2> "$scratch/serve-$n.log" &
  local pid=$!
  wait_healthy "$api_port"
  local files
  files=$(concurrent_urls "$n" "$name" | awk -v sha="$sha" -v n="$n" '
    { printf "%s{\"source\":\"%s\",\"key\":\"f%d.bin\",\"sha256\":\"%s\"}", (NR>1?",":""), $0, NR, sha }')
  local start id status
  start=$(date +%s.%N)
  id=$(curl -sf -H 'content-type: application/json' \
    -d "{\"destination\":\"s3://$bucket/ferry/stress-$n\",\"files\":[$files]}" \
    "http://127.0.0.1:$api_port/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  echo "t_s,rss_mib,level,score,admitted,cap,chunk_p95_ms" > "$timeline"
  while :; do
    local t rss ready
    t=$(echo "$(date +%s.%N) - $start" | bc -l)
    rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
    ready=$(curl -s "http://127.0.0.1:$api_port/readyz" | python3 -c '
import json,sys; p=json.load(sys.stdin)["pressure"]
print(",".join(str(x) for x in [p["level"], p["score"], p["admitted"], p["cap"], p["chunk_latency_p95_ms"]]))')
    printf '%.1f,%s,%s\n' "$t" "$rss" "$ready" >> "$timeline"
    status=$(curl -s "http://127.0.0.1:$api_port/v1/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
    case $status in completed|completed_with_errors|failed|cancelled) break ;; esac
    sleep 1
  done
  local secs
  secs=$(echo "$(date +%s.%N) - $start" | bc -l)
  local hwm
  hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  local ok
  ok=$(curl -s "http://127.0.0.1:$api_port/v1/jobs/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["succeeded"])')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if [ "$status" != completed ] || [ "$ok" != "$n" ]; then
    echo "ferry: job $id ended $status with $ok of $n files; see $scratch/serve-$n.log" >&2
    exit 1
  fi
  local p95 maxlevel
  p95=$(awk -F, 'NR>1 && $7!="None" && $7!="" {if ($7>m) m=$7} END {print m+0}' "$timeline")
  maxlevel=$(awk -F, 'NR>1 {print $3}' "$timeline" | sort -u | python3 -c '
import sys; order=["none","light","moderate","heavy","critical"]
seen=[l.strip() for l in sys.stdin if l.strip() in order]; print(max(seen, key=order.index) if seen else "none")')
  echo "$secs $hwm $p95 $maxlevel"
}

echo "origin: nginx on 127.0.0.1:$port; S3: Garage; ferry --memory-budget $budget; $(nproc) cpus; $(date -u +%Y-%m-%dT%H:%MZ)"
echo "tool,concurrency,seconds,mb_per_s,peak_rss_mib,chunk_p95_ms,max_level" > "$out/results.csv"
printf '%-8s %4s %10s %10s %14s %12s %10s\n' tool N seconds MB/s peak_RSS_MiB chunk_p95_ms max_level
for n in "${levels[@]}"; do
  for tool in $tools; do
    if [ "$tool" = ferry ]; then
      read -r secs rss p95 maxlevel < <(ferry_stress "$n")
    else
      read -r secs rss < <(peers_concurrent "$tool" "$n" "$name")
      p95=""; maxlevel=""
    fi
    mbs=$(echo "$n * 1073741824 / $secs / 1000000" | bc -l)
    printf '%-8s %4s %10.2f %10.1f %14s %12s %10s\n' "$tool" "$n" "$secs" "$mbs" "$rss" "${p95:--}" "${maxlevel:--}"
    printf '%s,%s,%.2f,%.1f,%s,%s,%s\n' "$tool" "$n" "$secs" "$mbs" "$rss" "$p95" "$maxlevel" >> "$out/results.csv"
    cleanup_bucket
  done
done
budget_mib=$(echo "$budget" | python3 -c 'import re,sys; m=re.fullmatch(r"(\d+)MiB", sys.stdin.read().strip()); print(int(m.group(1)) + 32 if m else "")')
python3 bench/plot.py "$out/results.csv" "$out/stress.png" $budget_mib
echo "wrote $out/results.csv, $out/timeline-*.csv, $out/stress.png"
