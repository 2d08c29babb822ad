# nginx as the static origin of the benchmarks (sourced by bench/copy.sh and
# bench/lib.sh). start_nginx PORT WORKERS serves $scratch/srv on
# 127.0.0.1:PORT, config, pid and logs under $scratch, installing nginx from
# Debian's packages if missing; the caller stops it with the pid file.
# Directories are listed (autoindex), for `rclone copy --http-url`.
# FERRY_BENCH_ACCESS_LOG=PATH logs every request there (the origin's count);
# FERRY_BENCH_LIMIT_RATE=4m caps each connection's rate (nginx limit_rate).
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
