# nginx as the static origin of the benchmarks (sourced by bench/copy.sh and
# bench/lib.sh). start_nginx PORT WORKERS serves $scratch/srv on
# 127.0.0.1:PORT, config, pid and logs under $scratch, installing nginx from
# Debian's packages if missing; the caller stops it with the pid file.
# Also the helpers of every benchmark that serves files or runs `ferry serve`
# (make_set, wait_healthy).
# Directories are listed (autoindex), for `rclone copy --http-url`.
# FERRY_BENCH_ACCESS_LOG=PATH logs every request there (the origin's count);
# FERRY_BENCH_LIMIT_RATE=4m caps each connection's rate (nginx limit_rate).
# make_set NAME COUNT KIB fills $scratch/srv/NAME with COUNT files of KIB
# KiB of random bytes (f000001.bin ...), once: the small-file sets.
make_set() {
  local dir="$scratch/srv/$1"
  [ -f "$dir/.done" ] && return
  mkdir -p "$dir"
  python3 - "$dir" "$2" "$3" <<'PY'
import os, sys
d, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(1, n + 1):
    with open(os.path.join(d, "f%06d.bin" % i), "wb") as f:
        f.write(os.urandom(kib * 1024))
PY
  touch "$dir/.done"
}

# wait_healthy PORT: waits (up to 20 s) until the `ferry serve` on PORT
# answers /healthz; fails otherwise.
wait_healthy() {
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$1/healthz" > /dev/null && return 0
    sleep 0.1
  done
  return 1
}

start_nginx() {
  local port=$1 workers=$2
  command -v nginx >/dev/null || apt-get install -y -q nginx-light >&2 || apt-get install -y -q nginx >&2
  mkdir -p "$scratch/tmp"
  cat > "$scratch/nginx.conf" <<CONF
worker_processes $workers;
pid $scratch/nginx.pid;
error_log $scratch/nginx-error.log;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log ${FERRY_BENCH_ACCESS_LOG:-off}; sendfile on; gzip off;
  client_body_temp_path $scratch/tmp; proxy_temp_path $scratch/tmp;
  fastcgi_temp_path $scratch/tmp; uwsgi_temp_path $scratch/tmp; scgi_temp_path $scratch/tmp;
  server { listen 127.0.0.1:$port; root $scratch/srv; autoindex on; limit_rate ${FERRY_BENCH_LIMIT_RATE:-0}; }
}
CONF
  nginx -c "$scratch/nginx.conf"
  sleep 0.3
}
