#!/usr/bin/env bash
# Live streams of `ferry serve` on loopback: time to first byte over
# CONNECTS fresh connections per protocol (NDJSON, SSE, WebSocket), then
# CLIENTS concurrent SSE clients on one running job (server RSS, event
# delivery latency). Release builds of ferry and the bench client.
#
#   bench/streams.sh [CONNECTS] [CLIENTS]      (defaults 1000 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
connects="${1:-1000}"
clients="${2:-1000}"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --locked -p ferry -p ferry-tests --bin ferry --bin ferry-stream-bench >&2
target="${CARGO_TARGET_DIR:-target}/release"
echo "== bench/streams.sh $connects $clients ($(nproc) cores, $(date -u +%F))"
"$target/ferry-stream-bench" "$target/ferry" "$connects" "$clients"
