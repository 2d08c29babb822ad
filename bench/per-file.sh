#!/usr/bin/env bash
# The work ferry does per small file, counted from outside the process:
#   origin requests  nginx's access log
#   S3 requests      Garage's own counters (admin API /metrics,
#                    api_s3_request_counter by endpoint)
#   fsyncs, file creations, renames, unlinks, connections
#                    strace -f -y on the process (ferry copy; the server:
#                    only what it does from the submit to the job's end);
#                    an fsync is the store's (SQLite ferry.db / WAL), a
#                    directory's, or a data file's (temp file, state file)
# for `ferry copy` and a `ferry serve` job (SQLite), into a directory and
# into Garage; N files of KIB KiB each. Prints per-file figures.
#
# Usage: bench/per-file.sh [N] [KIB]        (default: 200 100)
# Env:   FERRY_BENCH_DIR (scratch), FERRY_BENCH_CONCURRENCY (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-200}"
kib="${2:-100}"
conc="${FERRY_BENCH_CONCURRENCY:-16}"
tools=rclone   # the peer bench/lib.sh installs (for counting and purging)
scratch="${FERRY_BENCH_DIR:-$(mktemp -d)}"
export FERRY_BENCH_DIR=$scratch
export FERRY_BENCH_ACCESS_LOG="$scratch/access.log"
source bench/lib.sh
api_port=18094
garage_metrics="http://127.0.0.1:$((${AWS_ENDPOINT_URL##*:} + 3))/metrics"

set_dir="$scratch/srv/pf-${n}x$kib"
if [ ! -f "$set_dir/.done" ]; then
  mkdir -p "$set_dir"
  for i in $(seq -w 1 "$n"); do head -c "$((kib * 1024))" /dev/urandom > "$set_dir/f$i.bin"; done
  touch "$set_dir/.done"
fi
list="$scratch/pf-list.txt"
ls "$set_dir" | grep '\.bin$' | sed "s|^|http://127.0.0.1:$port/pf-${n}x$kib/|" > "$list"

s3_counts() {
  curl -sf "$garage_metrics" | sed -n 's/^api_s3_request_counter{api_endpoint="\([A-Za-z]*\)"} \([0-9.]*\)$/\1 \2/p' | sort
}
# Requests for the set in nginx's log so far (grep -c prints 0 itself when
# none match; an absent log counts 0).
origin_requests() {
  local c
  c=$(grep -cs "pf-${n}x$kib/" "$FERRY_BENCH_ACCESS_LOG" || true)
  echo "${c:-0}"
}

# summarize TRACE S3_BEFORE S3_AFTER ORIGIN_REQUESTS LABEL
summarize() {
  python3 - "$@" "$n" <<'PY'
import re, sys
trace, before, after, origin, label, n = sys.argv[1:7]
n = int(n)
def counts(path):
    out = {}
    for line in open(path):
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = int(float(parts[1]))
    return out
b, a = counts(before), counts(after)
s3 = {k: a.get(k, 0) - b.get(k, 0) for k in a if a.get(k, 0) - b.get(k, 0) > 0}
store = data = dirs = created = renames = unlinks = connects = 0
for line in open(trace):
    m = re.search(r'\b(fsync|fdatasync|openat|rename|renameat2?|unlink|unlinkat|connect|link|linkat)\((.*)', line)
    if not m or 'resumed>' in line:
        continue
    call, rest = m.groups()
    if re.search(r'= -1 ', line) and 'EINPROGRESS' not in line:
        continue
    path = re.search(r'<([^>]*)>', rest)
    path = path.group(1) if path else ''
    if call in ('fsync', 'fdatasync'):
        if 'ferry.db' in path:
            store += 1
        elif '.' not in path.rsplit('/', 1)[-1] or path.endswith('/'):
            dirs += 1
        else:
            data += 1
    elif call == 'openat' and 'O_CREAT' in rest:
        created += 1
    elif call.startswith('rename'):
        renames += 1
    elif call.startswith('unlink'):
        unlinks += 1
    elif call.startswith('link'):
        created += 1
    elif call == 'connect' and 'AF_INET' in rest:
        connects += 1
per = lambda x: f"{x / n:.2f}"
s3_text = ", ".join(f"{k} {per(v)}" for k, v in sorted(s3.items())) or "-"
print(f"| {label} | {per(int(origin))} | {s3_text} | {per(store)} | {per(data)} | {per(dirs)} | {per(created)} | {per(renames)} | {per(unlinks)} | {per(connects)} |")
PY
}

calls="fsync,fdatasync,openat,rename,renameat,renameat2,unlink,unlinkat,connect,link,linkat"

run_copy() {
  local kind=$1 dest
  case $kind in
    s3) dest="s3://$bucket/per-file/copy-$$/" ;;
    dir) dest="$scratch/out/copy-$$/"; mkdir -p "$dest" ;;
  esac
  s3_counts > "$scratch/s3.before"
  local o0; o0=$(origin_requests)
  strace -f -y -qq -e trace="$calls" -o "$scratch/trace.txt" \
    "$ferry" copy --concurrency "$conc" --state-dir "$scratch/state" --files-from "$list" "$dest" > /dev/null
  s3_counts > "$scratch/s3.after"
  summarize "$scratch/trace.txt" "$scratch/s3.before" "$scratch/s3.after" "$(( $(origin_requests) - o0 ))" "ferry copy -> $kind"
  case $kind in s3) rclone purge "garage:${dest#s3://}" 2>/dev/null || true ;; *) rm -rf "$dest" ;; esac
}

# The server runs under strace from its start; only what it does during
# the job (the trace's lines after the submit) is counted.
run_serve() {
  local kind=$1 data="$scratch/serve-pf" sdest
  rm -rf "$data"
  FERRY_LOG=warn strace -f -y -qq -e trace="$calls" -o "$scratch/serve-trace.txt" \
    "$ferry" serve --listen "127.0.0.1:$api_port" --data-dir "$data" \
    --concurrency "$conc" --per-job-concurrency "$conc" --allow-source 127.0.0.1 \
    --jobs-per-minute 0 --endpoint-url "$AWS_ENDPOINT_URL" 2> "$scratch/serve.log" &
  local pid=$!
  wait_healthy "$api_port"
  case $kind in s3) sdest="s3://$bucket/per-file/serve-$$" ;; dir) sdest="pf" ;; esac
  sleep 1
  local from
  from=$(wc -l < "$scratch/serve-trace.txt")
  s3_counts > "$scratch/s3.before"
  local o0; o0=$(origin_requests)
  "$ferry" job submit --server "http://127.0.0.1:$api_port" --files-from "$list" \
    --destination "$sdest" --wait > /dev/null 2> "$scratch/submit.log"
  s3_counts > "$scratch/s3.after"
  tail -n +"$((from + 1))" "$scratch/serve-trace.txt" > "$scratch/trace.txt"
  summarize "$scratch/trace.txt" "$scratch/s3.before" "$scratch/s3.after" "$(( $(origin_requests) - o0 ))" "ferry serve job -> $kind"
  # $pid is strace's: stop the server it runs, then strace ends.
  pkill -P "$pid" || true; wait "$pid" 2>/dev/null || true
  if [ "$kind" = s3 ]; then rclone purge "garage:$bucket/per-file/serve-$$" 2>/dev/null || true; fi
}

echo "Per file, $n files of $kib KiB, concurrency $conc ($(date -u +%Y-%m-%dT%H:%MZ), $("$ferry" --version | head -1)):"
echo
echo "| case | origin requests | S3 requests | store fsyncs | data fsyncs | dir fsyncs | files created | renames | unlinks | TCP connects |"
echo "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
run_copy dir
run_copy s3
run_serve dir
run_serve s3
