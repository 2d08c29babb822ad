# Shared set-up of the S3 benchmarks (sourced by bench/s3.sh, bench/soak.sh and
# bench/stress.sh): the peers, nginx as the origin on loopback, Garage, a
# release ferry, rclone's config from the environment, and helpers to run
# and time one transfer per tool. Expects: tools. Sets scratch
# (FERRY_BENCH_DIR, else a new temp dir; with srv/, tmp/, times/) and out
# (FERRY_BENCH_OUT, default docs/bench).
scratch="${FERRY_BENCH_DIR:-$(mktemp -d)}"
out="${FERRY_BENCH_OUT:-docs/bench}"
mkdir -p "$scratch/srv" "$scratch/tmp" "$scratch/times" "$out"
unset AWS_CA_BUNDLE   # breaks rclone against a plain-http endpoint
for t in $tools; do
  case $t in
    rclone) command -v rclone >/dev/null || apt-get install -y -q rclone >&2 ;;
    awscli) command -v aws >/dev/null || apt-get install -y -q awscli >&2 ;;
  esac
done

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
source bench/nginx.sh
start_nginx "$port" 2
trap 'kill "$(cat "$scratch/nginx.pid")" 2>/dev/null || true' EXIT

# make_source GIB: srv/bench-GIBg.bin of random bytes and its .sha256.
make_source() {
  local f="$scratch/srv/bench-${1}g.bin"
  [ -f "$f" ] || head -c "$(($1 * 1024 * 1024 * 1024))" /dev/urandom > "$f"
  [ -f "$f.sha256" ] || sha256sum "$f" | cut -d' ' -f1 > "$f.sha256"
}

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


# concurrent_urls N NAME: N distinct URLs (symlinks) for srv/NAME, printed.
concurrent_urls() {
  for i in $(seq 1 "$1"); do
    ln -sf "$2" "$scratch/srv/c$i-$2"
    echo "http://127.0.0.1:$port/c$i-$2"
  done
}

# peers_concurrent TOOL N NAME: N processes of a peer at once, each copying
# one of the concurrent URLs; prints "seconds total_peak_rss_mib" (the sum
# of each process's peak: an upper bound).
peers_concurrent() {
  local tool=$1 n=$2 name=$3 start end
  start=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    timed "$scratch/times/$tool-c$i.log" "$tool" "c$i-$name" "$tool/conc/c$i-$name" &
  done
  wait
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc -l) $(cat "$scratch"/times/"$tool"-c*.log | sed -n 's/.*Maximum resident set size (kbytes): //p' | awk '{s+=$1} END {printf "%.1f", s/1024}')"
  rm -f "$scratch"/times/"$tool"-c*.log
}

