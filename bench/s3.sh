#!/usr/bin/env bash
# Benchmark: URL -> S3 (Garage on loopback), ferry against the tools people
# use today, same origin, same Garage, same run:
#   ferry copy URL s3://B/K --sha256 HEX --compute-md5   (SHA-256+MD5, verified before commit)
#   rclone copyurl URL garage:B/K                        (Debian's rclone)
#   curl -s URL | aws s3 cp - s3://B/K                   (Debian's aws-cli)
# For each size: wall time, MB/s (10^6 B/s), peak RSS, CPU-s (user + sys). Then N concurrent
# 1 GiB transfers per tool: ferry as one process (`ferry copy SRC... DEST/
# --concurrency N`), each peer as N processes (they copy one URL per
# process); aggregate MB/s and total peak RSS (for N processes, the sum of
# each one's peak: an upper bound).
#
# Usage: bench/s3.sh [SIZES_GIB...]       (default: 1 5)
# Env:   FERRY_BENCH_DIR (scratch), FERRY_BENCH_CONCURRENCY (default 10;
#        0 skips the concurrent case), FERRY_BENCH_SETTLE (seconds after
#        each cleanup, default 20),
#        FERRY_BENCH_TOOLS (default "ferry rclone awscli").
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(1 5)
conc="${FERRY_BENCH_CONCURRENCY:-10}"
tools="${FERRY_BENCH_TOOLS:-ferry rclone awscli}"

source bench/lib.sh
for g in "${sizes[@]}" 1; do make_source "$g"; done

echo "origin: nginx on 127.0.0.1:$port; S3: Garage $(garage --version 2>/dev/null | awk '{print $2}') compression none; $(nproc) cpus; $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-10s %-8s %10s %10s %14s %8s\n' case tool seconds MB/s peak_RSS_MiB CPU_s
for g in "${sizes[@]}"; do
  name="bench-${g}g.bin"
  bytes=$((g * 1024 * 1024 * 1024))
  for tool in $tools; do
    log="$scratch/times/$tool-$g.log"
    timed "$log" "$tool" "$name" "$tool/$name"
    secs=$(wall_s "$log")
    # CPU: user + sys of the process (and its children: the peers' pipes).
    cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$log")
    printf '%-10s %-8s %10.2f %10.1f %14s %8s\n' "${g}GiB" "$tool" "$secs" "$(echo "$bytes / $secs / 1000000" | bc -l)" "$(rss_mib "$log")" "$cpu"
    cleanup_bucket
  done
done

[ "$conc" -gt 0 ] || exit 0
name=bench-1g.bin
mapfile -t urls < <(concurrent_urls "$conc" "$name")
for tool in $tools; do
  if [ "$tool" = ferry ]; then
    # One process, N transfers at once (ferry copy SRC... s3://B/prefix/).
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$scratch/times/ferry-c1.log" "$ferry" copy "${urls[@]}" \
      "s3://$bucket/ferry/conc/" --concurrency "$conc" --compute-md5 --json > /dev/null
    secs=$(echo "$(date +%s.%N) - $start" | bc -l)
    total_rss=$(rss_mib "$scratch/times/ferry-c1.log")
    rm -f "$scratch"/times/ferry-c*.log
  else
    read -r secs total_rss < <(peers_concurrent "$tool" "$conc" "$name")
  fi
  printf '%-10s %-8s %10.2f %10.1f %14s\n' "${conc}x1GiB" "$tool" "$secs" "$(echo "$conc * 1073741824 / $secs / 1000000" | bc -l)" "$total_rss"
  cleanup_bucket
done
