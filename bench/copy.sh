#!/usr/bin/env bash
# Benchmark: URL -> local directory, ferry against curl (with and without a hash).
#
# Serves generated files from nginx on loopback (installed from Debian's
# packages if missing; falls back to ferry's own test origin with
# FERRY_BENCH_ORIGIN=own) and, for each size, reports throughput (MB/s,
# 10^6 bytes per second), peak RSS and CPU-s (user + sys; /usr/bin/time -v) of:
#   ferry copy URL DIR/ --sha256 HEX --compute-md5   (SHA-256 + MD5, verified)
#   ferry copy URL DIR/ --sha256 HEX                 (SHA-256, verified)
#   curl -s -o FILE URL                              (no hash)
#   curl -s -o FILE URL && sync FILE DIR              (no hash, durable as ferry's)
#   dd if=/dev/zero of=FILE bs=4M conv=fdatasync      (the disk's durable speed)
#   curl -s URL | tee FILE | sha256sum               (SHA-256 only, unverified)
#
# Usage: bench/copy.sh [SIZES_GIB...]   (default: 1 5)
# Env:   FERRY_BENCH_DIR (scratch dir, default a temp dir; needs ~2x the
#        largest size free), FERRY_BENCH_ORIGIN=nginx|own,
#        FERRY_BENCH_FERRY (another ferry binary to measure, e.g. an older
#        commit's release build; default: this checkout's).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(1 5)

scratch="${FERRY_BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$scratch/srv" "$scratch/out"
origin_kind="${FERRY_BENCH_ORIGIN:-nginx}"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$scratch/nginx.pid" ] && kill "$(cat "$scratch/nginx.pid")" 2>/dev/null || true
  rm -rf "$scratch/out" "$scratch/srv"
}
trap cleanup EXIT

# The shipped binary, built alone (a build together with the test crates
# would unify their features into it); the test origin only when asked.
cargo build --release --locked -p ferry >&2
[ "${FERRY_BENCH_ORIGIN:-nginx}" = own ] && cargo build --release --locked -p ferry-tests --bin ferry-test-origin >&2
bin="${CARGO_TARGET_DIR:-target}/release"
ferry="${FERRY_BENCH_FERRY:-$bin/ferry}"

for g in "${sizes[@]}"; do
  f="$scratch/srv/bench-${g}g.bin"
  [ -f "$f" ] || head -c "$((g * 1024 * 1024 * 1024))" /dev/urandom > "$f"
done

port=18090
if [ "$origin_kind" = nginx ]; then
  source bench/nginx.sh
  start_nginx "$port" 1
  origin_desc="nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')"
else
  "$bin/ferry-test-origin" "$scratch/srv" "127.0.0.1:$port" > "$scratch/origin.out" &
  pids+=($!)
  origin_desc="ferry-test-origin"
fi
sleep 0.5

# Runs a command under /usr/bin/time -v; prints "seconds peak_rss_kib cpu_s".
# Dirty pages of the previous run are written out first (not timed), so no
# run pays for another's.
measure() {
  local log="$scratch/time.log"
  sync
  /usr/bin/time -v -o "$log" "$@" > /dev/null
  local wall rss
  wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
  rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
  cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$log")
  python3 -c "
import sys
parts=[float(p) for p in '$wall'.split(':')]
secs=sum(p*60**i for i,p in enumerate(reversed(parts)))
print(f'{secs:.3f} $rss $cpu')"
}

echo "origin: $origin_desc on 127.0.0.1:$port; cpus: $(nproc); $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-6s %-34s %10s %10s %12s %8s\n' size tool seconds MB/s peak_RSS_MiB CPU_s
# row SIZE TOOL SECS RSS_KIB CPU BYTES
row() {
  printf '%-6s %-34s %10s %10.1f %12.1f %8s\n' "$1" "$2" "$3" \
    "$(python3 -c "print($6/$3/1e6)")" "$(python3 -c "print($4/1024)")" "$5"
}
for g in "${sizes[@]}"; do
  name="bench-${g}g.bin"
  url="http://127.0.0.1:$port/$name"
  bytes=$((g * 1024 * 1024 * 1024))
  sha=$(sha256sum "$scratch/srv/$name" | cut -d' ' -f1)

  for md5 in "" --compute-md5; do
    rm -f "$scratch/out/$name"
    read -r secs rss cpu < <(measure "$ferry" copy "$url" "$scratch/out/" --sha256 "$sha" $md5 --json)
    got=$(sha256sum "$scratch/out/$name" | cut -d' ' -f1)
    [ "$got" = "$sha" ] || { echo "ferry produced a wrong file" >&2; exit 1; }
    row "${g}GiB" "ferry copy (sha256${md5:++md5}, verified)" "$secs" "$rss" "$cpu" "$bytes"
  done

  rm -f "$scratch/out/$name"
  read -r secs rss cpu < <(measure curl -s -o "$scratch/out/$name" "$url")
  row "${g}GiB" "curl -o (no hash)" "$secs" "$rss" "$cpu" "$bytes"

  # The same bytes made durable, as ferry leaves them (it fsyncs the file
  # and its directory before it returns): curl -o then sync of the file,
  # and the disk alone (dd of zeros, fdatasync at the end).
  rm -f "$scratch/out/$name"
  read -r secs rss cpu < <(measure bash -c "curl -s -o '$scratch/out/$name' '$url' && sync '$scratch/out/$name' '$scratch/out'")
  row "${g}GiB" "curl -o + sync (durable, no hash)" "$secs" "$rss" "$cpu" "$bytes"
  rm -f "$scratch/out/$name"
  read -r secs rss cpu < <(measure dd if=/dev/zero of="$scratch/out/$name" bs=4M count=$((g * 256)) conv=fdatasync status=none)
  row "${g}GiB" "dd conv=fdatasync (the disk alone)" "$secs" "$rss" "$cpu" "$bytes"

  rm -f "$scratch/out/$name"
  read -r secs rss cpu < <(measure bash -c "curl -s '$url' | tee '$scratch/out/$name' | sha256sum")
  row "${g}GiB" "curl | tee | sha256sum" "$secs" "$rss" "$cpu" "$bytes"
  rm -f "$scratch/out/$name"
done
