#!/usr/bin/env bash
# A single-node Garage (S3-compatible server) on loopback for ferry's tests,
# CI and benchmarks.
#
#   scripts/garage.sh install install Garage if missing (nothing else)
#   scripts/garage.sh start   install Garage if missing, start it (idempotent),
#                             apply a layout, create the key and buckets,
#                             print the environment to use (eval-able)
#   scripts/garage.sh env     print the environment only (Garage must be up)
#   scripts/garage.sh stop    stop the server this script started
#
# Data and config live in $FERRY_GARAGE_DIR (default /tmp/ferry-garage).
# Ports: S3 API $FERRY_GARAGE_PORT (default 3900), RPC +1, admin +3.
# Usage in a shell:  eval "$(scripts/garage.sh start)"
set -euo pipefail

GARAGE_VERSION=2.5.0
dir="${FERRY_GARAGE_DIR:-/tmp/ferry-garage}"
port="${FERRY_GARAGE_PORT:-3900}"
cfg="$dir/garage.toml"
pidfile="$dir/garage.pid"
key_name=ferry-test
# A fixed, test-only credential: imported, so every start yields the same key.
key_id=GK0123456789abcdef01234567
key_secret=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
buckets=(ferry-test ferry-test-2 ferry-bench)

log() { echo "garage.sh: $*" >&2; }

ensure_installed() {
  if command -v garage >/dev/null 2>&1 && garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
    return
  fi
  log "installing garage $GARAGE_VERSION with cargo (about 10-20 minutes on 2 cores)"
  cargo install garage --locked --version "$GARAGE_VERSION" >&2
}

g() { garage -c "$cfg" "$@"; }

write_config() {
  mkdir -p "$dir/meta" "$dir/data"
  [ -f "$dir/rpc_secret" ] || od -vAn -N32 -tx1 /dev/urandom | tr -d ' \n' > "$dir/rpc_secret"
  chmod 600 "$dir/rpc_secret"
  cat > "$cfg" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
# Benchmarks measure the client: spare Garage the zstd CPU.
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$((port + 1))"
rpc_public_addr = "127.0.0.1:$((port + 1))"
rpc_secret = "$(cat "$dir/rpc_secret")"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((port + 3))"
CONF
  chmod 600 "$cfg"
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

print_env() {
  cat <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$key_secret
export AWS_REGION=garage
export FERRY_TEST_S3_BUCKET=${buckets[0]}
export FERRY_TEST_S3_BUCKET_2=${buckets[1]}
ENV
}

start() {
  ensure_installed
  write_config
  if ! running; then
    log "starting garage on 127.0.0.1:$port (data in $dir)"
    nohup garage -c "$cfg" server > "$dir/garage.log" 2>&1 &
    echo $! > "$pidfile"
  fi
  for _ in $(seq 1 100); do
    g status >/dev/null 2>&1 && break
    running || { log "garage exited; see $dir/garage.log"; tail -20 "$dir/garage.log" >&2; exit 1; }
    sleep 0.2
  done
  if g layout show 2>/dev/null | grep -q "No nodes currently have a role"; then
    node="$(g node id -q 2>/dev/null | cut -d@ -f1)"
    g layout assign -z dc1 -c 10G "$node" >&2
    g layout apply --version 1 >&2
  fi
  # Right after a (re)start the cluster may still be settling: retry.
  retry() {
    for _ in $(seq 1 50); do "$@" >&2 2>/dev/null && return 0; sleep 0.3; done
    "$@" >&2
  }
  if ! g key info "$key_id" >/dev/null 2>&1; then
    retry g key import --yes -n "$key_name" "$key_id" "$key_secret"
  fi
  for b in "${buckets[@]}"; do
    g bucket info "$b" >/dev/null 2>&1 || retry g bucket create "$b"
    retry g bucket allow --read --write --owner "$b" --key "$key_id"
  done
  retry g key info "$key_id" >/dev/null
  # The S3 API answers once the layout is live.
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" || true)
    [ "$code" != "000" ] && break
    sleep 0.2
  done
  print_env
}

stop() {
  if running; then
    kill "$(cat "$pidfile")"
    for _ in $(seq 1 50); do running || break; sleep 0.1; done
    log "stopped"
  fi
  rm -f "$pidfile"
}

case "${1:-start}" in
  install) ensure_installed ;;
  start) start ;;
  env) print_env ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|env|stop" >&2; exit 2 ;;
esac
