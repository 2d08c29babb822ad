#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, property, integration (real HTTP
# origin, filesystem, Garage S3, PostgreSQL), CLI, serve, attack, crash and
# acceptance (cucumber) tests; the CLI and serve tests once more against
# the shipped release binary; then the API contract test.
# Starts the test Garage (installing it first if missing: ~10-20 minutes once).
set -euo pipefail
cd "$(dirname "$0")/.."
# Absolute: the tests run from their package's directory.
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac

# Garage, if missing, builds (10-20 minutes on 2 cores) while ferry's
# lints and tests build: a machine with nothing built spends the two
# builds' serial stretches (linking, single large crates) on each other.
garage_log="$(mktemp)"
bash scripts/garage.sh install > "$garage_log" 2>&1 &
garage_pid=$!

bash scripts/deps-check.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# The crash harness's build: the same program with kill points compiled in.
# `ferry` itself (what ships, and what every other test runs) has none.
cargo build --locked -p ferry --bin ferry-crashtest --features failpoints
export FERRY_CRASHTEST_BIN="$target/debug/ferry-crashtest"
cargo test --workspace --locked --no-run

if ! wait "$garage_pid"; then
  cat "$garage_log" >&2
  echo "test.sh: installing Garage failed" >&2
  exit 1
fi
rm -f "$garage_log"
eval "$(scripts/garage.sh start)"

# The crash harness's figures (its seeds, and what the origin counted)
# are shown once the tests pass.
crash_report="$(mktemp)"
FERRY_CRASH_REPORT="$crash_report" cargo test --workspace --locked
echo "== crash harness (bin/tests/crash.rs), measured at the origin =="
cat "$crash_report"
rm -f "$crash_report"

# The dashboard in Debian's chromium (about 2 minutes, mostly waiting on a
# throttled origin): beside the release build.
cargo build --workspace --locked --bins
browser_log="$(mktemp)"
FERRY_BROWSER_PREBUILT=1 bash scripts/browser.sh > "$browser_log" 2>&1 &
browser_pid=$!

# What ships: the release binary (fat LTO, no kill points), through the CLI
# serve process and cluster tests.
time cargo build --release --locked -p ferry
if ! wait "$browser_pid"; then
  cat "$browser_log" >&2
  echo "test.sh: the browser tests failed" >&2
  exit 1
fi
grep '^browser:' "$browser_log"
FERRY_BIN="$target/release/ferry" cargo test --workspace --locked --test cli --test serve --test sources --test objects --test cluster

# The Debian package: built (cargo-deb, pinned), installed, `ferry
# --version` and one copy run from the installed binary, removed.
if [ "$(id -u)" = 0 ]; then
  bash scripts/package.sh --check
else
  echo "test.sh: not root: the package is built but not installed" >&2
  bash scripts/package.sh
fi

# Contract: the running server's answers against its generated OpenAPI
# document (schemathesis, pinned; zero 5xx, zero schema violations).
bash scripts/contract.sh
