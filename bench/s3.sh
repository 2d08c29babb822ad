#!/usr/bin/env bash
# Benchmark: URL -> S3 (Garage on loopback), ferry against the tools people
# use today, same origin, same Garage, same run:
#   ferry copy URL s3://B/K --sha256 HEX --compute-md5   (SHA-256+MD5, verified before commit)
#   rclone copyurl URL garage:B/K                        (Debian's rclone)
#   curl -s URL | aws s3 cp - s3://B/K                   (Debian's aws-cli)
# For each size: wall time, MB/s (10^6 B/s), peak RSS. Then N concurrent
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
scratch="${FERRY_BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$scratch/srv" "$scratch/tmp" "$scratch/times"
unset AWS_CA_BUNDLE   # breaks rclone against a plain-http endpoint

for t in $tools; do
  case $t in
    rclone) command -v rclone >/dev/null || apt-get install -y -q rclone >&2 ;;
    awscli) command -v aws >/dev/null || apt-get install -y -q awscli >&2 ;;
  esac
done
command -v nginx >/dev/null || apt-get install -y -q nginx-light >&2 || apt-get install -y -q nginx >&2

cargo build --release --locked -p ferry >&2
ferry="${CARGO_TARGET_DIR:-target}/release/ferry"
eval "$(scripts/garage.sh start)"
bucket=ferry-bench
export RCLONE_CONFIG_GARAGE_TYPE=s3 RCLONE_CONFIG_GARAGE_PROVIDER=Other \
  RCLONE_CONFIG_GARAGE_ENDPOINT="$AWS_ENDPOINT_URL" RCLONE_CONFIG_GARAGE_REGION="$AWS_REGION" \
  RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
  RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE=true

port=18091
cat > "$scratch/nginx.conf" <<CONF
worker_processes 2;
pid $scratch/nginx.pid;
error_log $scratch/nginx-error.log;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log off; sendfile on; gzip off;
  client_body_temp_path $scratch/tmp; proxy_temp_path $scratch/tmp;
  fastcgi_temp_path $scratch/tmp; uwsgi_temp_path $scratch/tmp; scgi_temp_path $scratch/tmp;
  server { listen 127.0.0.1:$port; root $scratch/srv; }
}
CONF
nginx -c "$scratch/nginx.conf"
trap 'kill "$(cat "$scratch/nginx.pid")" 2>/dev/null || true' EXIT
sleep 0.3

for g in "${sizes[@]}" 1; do
  f="$scratch/srv/bench-${g}g.bin"
  [ -f "$f" ] || head -c "$((g * 1024 * 1024 * 1024))" /dev/urandom > "$f"
done

# run TOOL NAME KEY: one transfer of srv/NAME to s3://bucket/KEY.
run() {
  local tool=$1 name=$2 key=$3 url="http://127.0.0.1:$port/$2"
  case $tool in
    ferry) "$ferry" copy "$url" "s3://$bucket/$key" --sha256 "$(cat "$scratch/srv/$name.sha256")" --compute-md5 --json ;;
    rclone) rclone copyurl "$url" "garage:$bucket/$key" ;;
    awscli) bash -c "curl -s '$url' | aws s3 cp - 's3://$bucket/$key' --endpoint-url '$AWS_ENDPOINT_URL' --only-show-errors" ;;
  esac
}

# timed LOG TOOL NAME KEY: run under /usr/bin/time -v into LOG.
timed() {
  local log=$1; shift
  /usr/bin/time -v -o "$log" bash -c "$(declare -f run); ferry='$ferry' bucket='$bucket' port='$port' scratch='$scratch' run $*" > /dev/null
}

rss_mib() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1" | awk '{s+=$1} END {printf "%.1f", s/1024}'; }
wall_s() { sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$1" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }'; }
# Empty the bucket, then let Garage's background block GC settle so it does
# not eat into the next tool's measurement.
cleanup_bucket() {
  aws s3 rm "s3://$bucket/" --recursive --endpoint-url "$AWS_ENDPOINT_URL" --only-show-errors || true
  sleep "${FERRY_BENCH_SETTLE:-20}"
}

echo "origin: nginx on 127.0.0.1:$port; S3: Garage $(garage --version 2>/dev/null | awk '{print $2}') compression none; $(nproc) cpus; $(date -u +%Y-%m-%dT%H:%MZ)"
printf '%-10s %-8s %10s %10s %14s\n' case tool seconds MB/s peak_RSS_MiB
for g in "${sizes[@]}"; do
  name="bench-${g}g.bin"
  sha256sum "$scratch/srv/$name" | cut -d' ' -f1 > "$scratch/srv/$name.sha256"
  bytes=$((g * 1024 * 1024 * 1024))
  for tool in $tools; do
    log="$scratch/times/$tool-$g.log"
    timed "$log" "$tool" "$name" "$tool/$name"
    secs=$(wall_s "$log")
    printf '%-10s %-8s %10.2f %10.1f %14s\n' "${g}GiB" "$tool" "$secs" "$(echo "$bytes / $secs / 1000000" | bc -l)" "$(rss_mib "$log")"
    cleanup_bucket
  done
done

[ "$conc" -gt 0 ] || exit 0
name=bench-1g.bin
sha256sum "$scratch/srv/$name" | cut -d' ' -f1 > "$scratch/srv/$name.sha256"
urls=()
for i in $(seq 1 "$conc"); do
  ln -sf "$name" "$scratch/srv/c$i-$name"
  urls+=("http://127.0.0.1:$port/c$i-$name")
done
for tool in $tools; do
  start=$(date +%s.%N)
  if [ "$tool" = ferry ]; then
    # One process, N transfers at once (ferry copy SRC... s3://B/prefix/).
    /usr/bin/time -v -o "$scratch/times/ferry-c1.log" "$ferry" copy "${urls[@]}" \
      "s3://$bucket/ferry/conc/" --concurrency "$conc" --compute-md5 --json > /dev/null
  else
    # The peers copy one URL per process: N processes.
    for i in $(seq 1 "$conc"); do
      timed "$scratch/times/$tool-c$i.log" "$tool" "c$i-$name" "$tool/conc/c$i-$name" &
    done
  fi
  wait
  end=$(date +%s.%N)
  secs=$(echo "$end - $start" | bc -l)
  total_rss=$(cat "$scratch"/times/"$tool"-c*.log | sed -n 's/.*Maximum resident set size (kbytes): //p' | awk '{s+=$1} END {printf "%.1f", s/1024}')
  printf '%-10s %-8s %10.2f %10.1f %14s\n' "${conc}x1GiB" "$tool" "$secs" "$(echo "$conc * 1073741824 / $secs / 1000000" | bc -l)" "$total_rss"
  rm -f "$scratch"/times/"$tool"-c*.log
  cleanup_bucket
done
