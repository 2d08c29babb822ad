#!/usr/bin/env bash
# ferry's main job on the embedded default, on a fresh machine with no
# internet: build ferry, start a local origin serving a generated file, copy
# it into ./ferry-data/ with its SHA-256 checked in flight, and verify the
# result independently.
#
# Usage: scripts/demo.sh [SIZE_MIB]   (default 1024, i.e. a 1 GiB file)
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib="${1:-1024}"
work="$(mktemp -d)"
origin_pid=""
cleanup() {
  [ -n "$origin_pid" ] && kill "$origin_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> building ferry (release)"
cargo build --release --locked -p ferry -p ferry-tests --bins
bin="${CARGO_TARGET_DIR:-target}/release"

echo "==> generating a ${size_mib} MiB source file"
mkdir -p "$work/srv"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/srv/demo.bin"
sha="$(sha256sum "$work/srv/demo.bin" | cut -d' ' -f1)"

echo "==> starting a local origin"
"$bin/ferry-test-origin" "$work/srv" 127.0.0.1:0 > "$work/origin.out" &
origin_pid=$!
for _ in $(seq 1 50); do
  grep -q listening "$work/origin.out" 2>/dev/null && break
  sleep 0.1
done
url="$(sed -n 's/^listening on //p' "$work/origin.out")/demo.bin"

echo "==> ferry copy $url ./ferry-data/ --sha256 $sha"
mkdir -p ferry-data
rm -f ferry-data/demo.bin
"$bin/ferry" copy "$url" ./ferry-data/ --sha256 "$sha" --compute-md5

echo "==> verifying ./ferry-data/demo.bin independently"
got="$(sha256sum ferry-data/demo.bin | cut -d' ' -f1)"
if [ "$got" != "$sha" ]; then
  echo "demo FAILED: sha256 $got != $sha" >&2
  exit 1
fi
echo "demo OK: ./ferry-data/demo.bin matches the source (sha256 $sha)"
