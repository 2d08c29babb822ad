#!/usr/bin/env bash
# The dashboard's cost: bytes it embeds in the shipped binary (the three
# asset files, measured with wc -c; the release binary's size beside them)
# and first paint of `/` from loopback in Debian's chromium (the browser's
# Performance API, 20 loads with the cache disabled, after one uncounted
# warm-up load) against the release
# `ferry serve` (built with `-p ferry` alone).
#
# Usage: bench/dashboard.sh [LOADS]
set -euo pipefail
cd "$(dirname "$0")/.."
loads="${1:-20}"
command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >&2
(cd tests/browser && npm ci --no-audit --no-fund --silent)
cargo build --release --locked -p ferry >&2
ferry="${CARGO_TARGET_DIR:-target}/release/ferry"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$ferry" serve --listen 127.0.0.1:0 --data-dir "$work/data" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 1 100); do
  url=$(sed -n 's/^ferry serve: listening on \([^ ]*\).*/\1/p' "$work/serve.log")
  [ -n "$url" ] && break
  sleep 0.1
done
echo "$("$ferry" --version); $(chromium --version 2>/dev/null); $(nproc) cpus; $(date -u +%Y-%m-%dT%H:%MZ)"
assets=$(cat bin/src/api/ui/index.html bin/src/api/ui/app.js bin/src/api/ui/app.css | wc -c)
echo "embedded assets: $assets bytes (index.html $(wc -c < bin/src/api/ui/index.html), app.js $(wc -c < bin/src/api/ui/app.js), app.css $(wc -c < bin/src/api/ui/app.css)); release binary: $(stat -c %s "$ferry") bytes"
CHROMIUM="$(command -v chromium)" node tests/browser/firstpaint.mjs "$url/" "$loads"
