#!/usr/bin/env bash
# Benchmark: many small files, URL -> Garage and URL -> directory, from one
# nginx origin on loopback (autoindex on), in one run:
#   ferry-args   ferry copy URL1 ... URLn DEST/ --concurrency C
#   ferry-list   ferry copy --files-from LIST DEST/ --concurrency C
#   ferry-serve  one `ferry serve` job of the same files (SQLite store),
#                --concurrency C --per-job-concurrency C, submitted with
#                `ferry job submit --files-from LIST --wait`
#   ferry-pg     the same job with the store on PostgreSQL
#                (FERRY_BENCH_PG, default postgres://postgres@127.0.0.1:5432/test;
#                a fresh database per run, dropped after)
#   rclone       rclone copy --http-url ORIGIN/SET/ :http: DEST --transfers C
# For each: seconds (wall), files/s, CPU-s per 1,000 files (user + sys of
# the process; for ferry serve the server's CPU from /proc during the job),
# peak RSS (for ferry serve the server's VmHWM), and what the run cost the
# shared machine: Garage's and nginx's CPU-s per 1,000 files and the
# machine's busy share (all cores, /proc/stat) over the run. Every run is checked from
# outside: the destination must hold exactly N files afterwards (counted
# with `rclone lsf` or `find`), else the script fails.
#
# Usage: bench/small.sh [COUNTxKIB...]     (default: 2000x100 20000x10)
# Env:   FERRY_BENCH_TOOLS (default "ferry-args ferry-list ferry-serve
#        ferry-pg rclone"), FERRY_BENCH_DESTS (default "s3 dir"),
#        FERRY_BENCH_CONCURRENCY (default 16), FERRY_BENCH_DIR (scratch),
#        FERRY_BENCH_BASELINE (another ferry binary, e.g. an older commit's
#        release build: tools base-args, base-list, base-serve, base-pg run
#        it as ferry-args ... do, in the same run),
#        FERRY_BENCH_PROFILE (a directory: `perf record -g` of the ferry serve
#        process during each job, one perf.data per run, there; report with
#        `perf report -i FILE --no-children`).
set -euo pipefail
cd "$(dirname "$0")/.."
sets=("$@")
[ ${#sets[@]} -eq 0 ] && sets=(2000x100 20000x10)
runs="${FERRY_BENCH_TOOLS:-ferry-args ferry-list ferry-serve ferry-pg rclone}"
dests="${FERRY_BENCH_DESTS:-s3 dir}"
conc="${FERRY_BENCH_CONCURRENCY:-16}"
pg="${FERRY_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}"
tools=rclone   # the peer bench/lib.sh installs
source bench/lib.sh
api_port=18093
tick=$(getconf CLK_TCK)

# count DEST: files now at DEST (s3://bucket/prefix/ or a directory).
count() {
  case $1 in
    s3://*) rclone lsf -R --files-only "garage:${1#s3://}" 2> /dev/null | wc -l ;;
    *) find "$1" -type f | wc -l ;;
  esac
}

# cpu_s PID: user + sys seconds the process has used so far.
cpu_s() { awk -v t="$tick" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
# named_cpu_s NAME: user + sys seconds used so far by every process NAME
# (Garage, nginx's master and workers): what the tool made the shared
# origin and store spend, read from their /proc, not from the tool.
named_cpu_s() {
  local pids
  pids=$(pgrep -x "$1" | sed 's|.*|/proc/&/stat|' | tr '\n' ' ')
  # shellcheck disable=SC2086
  [ -n "$pids" ] && awk -v t="$tick" '{s += $14 + $15} END {printf "%.2f", s / t}' $pids 2> /dev/null || echo 0
}
# jiffies: "busy total" jiffies of the whole machine so far (/proc/stat).
jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
# others_start / others_end: the shared servers' CPU and the machine's load
# over one run; others_end N prints "garage-CPU-s/1000 | nginx-CPU-s/1000 | busy %".
others_start() { g0=$(named_cpu_s garage); x0=$(named_cpu_s nginx); read -r b0 j0 <<< "$(jiffies)"; }
others_end() {
  local g x b j
  g=$(named_cpu_s garage); x=$(named_cpu_s nginx); read -r b j <<< "$(jiffies)"
  printf '%.2f | %.2f | %.0f' "$(echo "($g - $g0) * 1000 / $1" | bc -l)" \
    "$(echo "($x - $x0) * 1000 / $1" | bc -l)" "$(echo "($b - $b0) * 100 / ($j - $j0)" | bc -l)"
}

serve_pid=""
stop_serve() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  serve_pid=""
}
trap 'stop_serve; kill "$(cat "$scratch/nginx.pid")" 2>/dev/null || true' EXIT

# start_serve DATA_DIR [DATABASE_URL]
start_serve() {
  local data=$1 db=${2:-}
  rm -rf "$data"
  local extra=()
  [ -n "$db" ] && extra=(--database-url "$db")
  FERRY_LOG=warn "$bin" serve --listen "127.0.0.1:$api_port" --data-dir "$data" \
    --concurrency "$conc" --per-job-concurrency "$conc" --max-files-per-job 1000000 --max-body 256MiB \
    --allow-source 127.0.0.1 --jobs-per-minute 0 --endpoint-url "$AWS_ENDPOINT_URL" \
    "${extra[@]}" 2> "$scratch/serve.log" &
  serve_pid=$!
  wait_healthy "$api_port" && return
  cat "$scratch/serve.log" >&2
  echo "small.sh: ferry serve did not start" >&2
  exit 1
}

# run_one TOOL SET DEST_KIND: prints one table row.
run_one() {
  local tool=$1 set=$2 kind=$3 n=${2%x*} label="$1-$2-$3-$$"
  # The binary measured: this build's, or the baseline's for base-*.
  bin=$ferry
  case $tool in
    base-*)
      bin=${FERRY_BENCH_BASELINE:?base-* tools need FERRY_BENCH_BASELINE}
      tool=ferry-${tool#base-}
      ;;
  esac
  local dest list="$scratch/list-$set.txt" log="$scratch/times/$label.log"
  case $kind in
    s3) dest="s3://$bucket/small/$label/" ;;
    dir) dest="$scratch/out/$label/" ;;
  esac
  local seconds cpu rss others
  case $tool in
    ferry-args | ferry-list | rclone)
      local cmd
      case $tool in
        ferry-args) cmd=("$bin" copy --concurrency "$conc" $(cat "$list") "$dest") ;;
        ferry-list) cmd=("$bin" copy --concurrency "$conc" --files-from "$list" "$dest") ;;
        rclone)
          local rdest=$dest
          [ "$kind" = s3 ] && rdest="garage:${dest#s3://}"
          cmd=(rclone copy --http-url "http://127.0.0.1:$port/small-$set/" :http: "$rdest" \
            --transfers "$conc" --exclude .done) ;;
      esac
      [ "$kind" = dir ] && mkdir -p "$dest"
      others_start
      /usr/bin/time -v -o "$log" "${cmd[@]}" > /dev/null 2> "$scratch/err.log" || {
        tail -5 "$scratch/err.log" >&2; echo "small.sh: $tool failed" >&2; exit 1; }
      others=$(others_end "$n")
      seconds=$(wall_s "$log")
      cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$log")
      rss=$(rss_mib "$log")
      ;;
    ferry-serve | ferry-pg)
      local db="" dbname=""
      if [ "$tool" = ferry-pg ]; then
        dbname="ferry_small_$$_$RANDOM"
        psql -q "$pg" -c "CREATE DATABASE $dbname" > /dev/null
        db="${pg%/*}/$dbname"
      fi
      start_serve "$scratch/serve-$label" "$db"
      local sdest=$dest
      if [ "$kind" = dir ]; then
        sdest="out/$label"
        dest="$scratch/serve-$label/files/out/$label/"
      fi
      local c0 t0 t1 perf_pid=""
      if [ -n "${FERRY_BENCH_PROFILE:-}" ]; then
        mkdir -p "$FERRY_BENCH_PROFILE"
        perf record -q -F ${FERRY_BENCH_PROFILE_HZ:-499} -g -p "$serve_pid" -o "$FERRY_BENCH_PROFILE/$label.data" 2> /dev/null &
        perf_pid=$!
        sleep 0.5
      fi
      c0=$(cpu_s "$serve_pid")
      others_start
      t0=$(date +%s.%N)
      "$ferry" job submit --server "http://127.0.0.1:$api_port" --files-from "$list" \
        --destination "$sdest" --wait > /dev/null 2> "$scratch/err.log" || {
        tail -5 "$scratch/err.log" >&2; echo "small.sh: the job failed" >&2; exit 1; }
      t1=$(date +%s.%N)
      others=$(others_end "$n")
      seconds=$(echo "$t1 - $t0" | bc -l)
      cpu=$(echo "$(cpu_s "$serve_pid") - $c0" | bc -l)
      rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$serve_pid/status")
      [ -n "$perf_pid" ] && { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
      stop_serve
      [ -n "$dbname" ] && psql -q "$pg" -c "DROP DATABASE $dbname" > /dev/null
      ;;
  esac
  local got
  got=$(count "$dest")
  if [ "$got" -ne "$n" ]; then
    echo "small.sh: $tool $set $kind left $got files at $dest, not $n" >&2
    exit 1
  fi
  printf '| %s | %s | %s | %.2f | %.0f | %.2f | %s | %s |\n' "$set" "$kind" "$1" "$seconds" \
    "$(echo "$n / $seconds" | bc -l)" "$(echo "$cpu * 1000 / $n" | bc -l)" "$rss" "$others"
  case $kind in
    s3) rclone purge "garage:${dest#s3://}" 2> /dev/null || true; sleep "${FERRY_BENCH_SETTLE:-5}" ;;
    dir) rm -rf "$dest" "$scratch/serve-$label" ;;
  esac
}

echo "| set (files x KiB) | dest | tool | seconds | files/s | CPU-s / 1,000 files | peak RSS MiB | Garage CPU-s / 1,000 | nginx CPU-s / 1,000 | machine busy % |"
echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for set in "${sets[@]}"; do
  make_set "small-$set" "${set%x*}" "${set#*x}"
  ls "$scratch/srv/small-$set" | grep '\.bin$' | sed "s|^|http://127.0.0.1:$port/small-$set/|" > "$scratch/list-$set.txt"
  for kind in $dests; do
    for tool in $runs; do
      run_one "$tool" "$set" "$kind"
    done
  done
done
echo
[ -n "${FERRY_BENCH_BASELINE:-}" ] && echo "baseline (base-*): $("$FERRY_BENCH_BASELINE" --version | head -1)"
echo "ferry $("$ferry" --version | head -1); $(rclone version | head -1); nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'); concurrency $conc; $(nproc) cores"
