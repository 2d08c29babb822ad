#!/usr/bin/env bash
# Benchmark: cluster mode's scaling. One job of COUNT files of MIB MiB
# (default 300 x 4 MiB) from nginx on loopback with every connection capped
# (FERRY_BENCH_LIMIT_RATE, default 4m = 4 MiB/s, so that one node cannot
# saturate the machine), into Garage, run by:
#   plain      one `ferry serve` on PostgreSQL, not a cluster (the baseline)
#   cluster-N  N `ferry serve --cluster` nodes on one PostgreSQL (N = 1 2 3)
# Every node: --concurrency C (FERRY_BENCH_CONCURRENCY, default 4) and a job
# window larger than the cluster's room (--per-job-concurrency 256). The job is
# submitted to the first node with `ferry job submit --wait`.
# For each: seconds (wall, submit to completion), files/s, the speed-up over
# cluster-1, and what PostgreSQL itself counted for the run's database
# (pg_stat_database: committed transactions per file), with the files each
# node ran (the store's lease_owner). Checked from outside: the origin's
# access log must show COUNT GETs, none a Range (nothing fetched twice),
# and the bucket must hold COUNT objects (rclone lsf), else the script fails.
#
# Usage: bench/cluster.sh [COUNTxMIB]     (default 300x4)
# Env:   FERRY_BENCH_RUNS (default "plain cluster-1 cluster-2 cluster-3"),
#        FERRY_BENCH_PG (default postgres://postgres@127.0.0.1:5432/test),
#        FERRY_BENCH_DIR (scratch).
set -euo pipefail
cd "$(dirname "$0")/.."
set_spec="${1:-300x4}"
count=${set_spec%x*}
mib=${set_spec#*x}
runs="${FERRY_BENCH_RUNS:-plain cluster-1 cluster-2 cluster-3}"
conc="${FERRY_BENCH_CONCURRENCY:-4}"
pg="${FERRY_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}"
export FERRY_BENCH_LIMIT_RATE="${FERRY_BENCH_LIMIT_RATE:-4m}"
scratch="${FERRY_BENCH_DIR:-$(mktemp -d)}"
export FERRY_BENCH_DIR="$scratch"
# nginx's workers (nobody) read the files: mktemp -d makes the dir 0700.
mkdir -p "$scratch" && chmod 755 "$scratch"
export FERRY_BENCH_ACCESS_LOG="$scratch/access.log"
tools=rclone
source bench/lib.sh

pids=()
stop_nodes() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  pids=()
}
trap 'stop_nodes; kill "$(cat "$scratch/nginx.pid")" 2>/dev/null || true' EXIT

dir="$scratch/srv/cluster-$set_spec"
if [ ! -f "$dir/.done" ]; then
  mkdir -p "$dir"
  for i in $(seq -f '%04g' 1 "$count"); do
    head -c "$((mib * 1024 * 1024))" /dev/urandom > "$dir/f$i.bin"
  done
  touch "$dir/.done"
fi
list="$scratch/list-$set_spec.txt"
ls "$dir" | grep '\.bin$' | sed "s|^|http://127.0.0.1:$port/cluster-$set_spec/|" > "$list"

# start_node PORT DATABASE_URL [cluster flags...]
start_node() {
  local p=$1 db=$2; shift 2
  rm -rf "$scratch/node-$p"
  FERRY_LOG=warn "$ferry" serve --listen "127.0.0.1:$p" --data-dir "$scratch/node-$p" \
    --database-url "$db" --concurrency "$conc" --per-job-concurrency 256 \
    --max-files-per-job 1000000 --max-body 64MiB --allow-source 127.0.0.1 \
    --jobs-per-minute 0 --endpoint-url "$AWS_ENDPOINT_URL" "$@" 2> "$scratch/node-$p.log" &
  pids+=($!)
  wait_healthy "$p" && return
  cat "$scratch/node-$p.log" >&2
  echo "cluster.sh: ferry serve on $p did not start" >&2
  exit 1
}

commits() { psql -Atq "$pg" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'"; }

base=""
echo "| run | nodes | seconds | files/s | speed-up over cluster-1 | PostgreSQL commits / file | files per node |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
for run in $runs; do
  dbname="ferry_cluster_$$_$RANDOM"
  psql -q "$pg" -c "CREATE DATABASE $dbname" > /dev/null
  db="${pg%/*}/$dbname"
  nodes=1
  case $run in
    plain) start_node 18101 "$db" ;;
    cluster-*)
      nodes=${run#cluster-}
      for n in $(seq 1 "$nodes"); do
        start_node $((18100 + n)) "$db" --cluster --node-id "bench-$n"
      done ;;
  esac
  : > "$FERRY_BENCH_ACCESS_LOG"
  kill -USR1 "$(cat "$scratch/nginx.pid")"   # reopen the access log
  sleep 0.5
  dest="s3://$bucket/cluster/$run-$$/"
  c0=$(commits "$dbname")
  t0=$(date +%s.%N)
  "$ferry" job submit --server "http://127.0.0.1:18101" --files-from "$list" \
    --destination "$dest" --wait > /dev/null 2> "$scratch/err.log" || {
    tail -5 "$scratch/err.log" >&2; echo "cluster.sh: the $run job failed" >&2; exit 1; }
  t1=$(date +%s.%N)
  c1=$(commits "$dbname")
  per_node=$(psql -AtqF: "$db" -c "SELECT coalesce(lease_owner, 'plain'), count(*) FROM ferry_tasks GROUP BY 1 ORDER BY 1" | paste -sd' ')
  stop_nodes
  gets=$(grep -c '"GET /cluster-[^"]*" 200 ' "$FERRY_BENCH_ACCESS_LOG" || true)
  ranged=$(grep -c '"GET /cluster-[^"]*" 206 ' "$FERRY_BENCH_ACCESS_LOG" || true)
  got=$(rclone lsf -R --files-only "garage:${dest#s3://}" 2> /dev/null | wc -l)
  if [ "$gets" -ne "$count" ] || [ "$ranged" -ne 0 ] || [ "$got" -ne "$count" ]; then
    echo "cluster.sh: $run: origin served $gets whole GETs and $ranged ranges, bucket holds $got objects; $count, 0, $count expected" >&2
    exit 1
  fi
  seconds=$(echo "$t1 - $t0" | bc -l)
  [ "$run" = cluster-1 ] && base=$seconds
  speedup="-"
  [ -n "$base" ] && speedup=$(printf '%.2fx' "$(echo "$base / $seconds" | bc -l)")
  printf '| %s | %s | %.1f | %.2f | %s | %.1f | %s |\n' "$run" "$nodes" "$seconds" \
    "$(echo "$count / $seconds" | bc -l)" "$speedup" "$(echo "($c1 - $c0) / $count" | bc -l)" "$per_node"
  rclone purge "garage:${dest#s3://}" 2> /dev/null || true
  psql -q "$pg" -c "DROP DATABASE $dbname WITH (FORCE)" > /dev/null
  sleep "${FERRY_BENCH_SETTLE:-5}"
done
echo
echo "ferry $("$ferry" --version | head -1); nginx limit_rate $FERRY_BENCH_LIMIT_RATE per connection; --concurrency $conc per node; $(nproc) cores; one machine (nodes, PostgreSQL, Garage, nginx)"
