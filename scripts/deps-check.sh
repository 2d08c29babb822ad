#!/usr/bin/env bash
# Dependency policy, checked on Cargo.lock (run by scripts/test.sh):
# one TLS stack (rustls 0.23 on ring) across reqwest, the AWS SDK and sqlx;
# no second, older stack (hyper 0.14, rustls 0.21, rustls-webpki < 0.103,
# flagged by RUSTSEC-2026-0098/0099) and no aws-lc.
set -euo pipefail
cd "$(dirname "$0")/.."
lock=Cargo.lock
bad=0
# name version-prefix: a package that must not be in the lock file.
while read -r name version; do
  if awk -v n="$name" -v v="$version" '
      $0 == "name = \"" n "\"" { getline; if (index($0, "version = \"" v) == 1) found = 1 }
      END { exit found ? 0 : 1 }' "$lock"; then
    echo "deps-check: $name $version* is in Cargo.lock (not allowed; see Cargo.toml's AWS comment)" >&2
    bad=1
  fi
done <<'LIST'
rustls 0.21
rustls 0.22
rustls-webpki 0.100
rustls-webpki 0.101
rustls-webpki 0.102
hyper 0.14
aws-lc-rs
aws-lc-sys
LIST
packages=$(grep -c '^name = ' "$lock")
if [ "$bad" -ne 0 ]; then
  echo "deps-check: FAILED ($packages packages in Cargo.lock)" >&2
  exit 1
fi
echo "deps-check: ok ($packages packages in Cargo.lock, one TLS provider: ring)"
