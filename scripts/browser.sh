#!/usr/bin/env bash
# Browser tests of the dashboard (tests/browser/dashboard.mjs): Debian's
# chromium (apt, installed if missing) driven by playwright-core and
# checked by axe-core (npm, versions pinned in tests/browser/package.json
# and package-lock.json), against a real `ferry serve` and a throttled
# origin (ferry-test-origin).
#
#   scripts/browser.sh [--screenshots]   (--screenshots: write docs/img/*.png)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac

if ! command -v chromium >/dev/null 2>&1; then
  echo "browser.sh: installing Debian's chromium" >&2
  (apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }) >&2
fi
chromium --version >&2
(cd tests/browser && npm ci --no-audit --no-fund --silent)
# scripts/test.sh builds the binaries first and runs this beside the
# release build (FERRY_BROWSER_PREBUILT=1).
[ -n "${FERRY_BROWSER_PREBUILT:-}" ] || cargo build --workspace --locked --bins >&2

export FERRY_BIN="${FERRY_BIN:-$target/debug/ferry}"
export FERRY_ORIGIN_BIN="${FERRY_ORIGIN_BIN:-$target/debug/ferry-test-origin}"
export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
if [ "${1:-}" = "--screenshots" ]; then
  mkdir -p docs/img
  export FERRY_SCREENSHOTS="$PWD/docs/img"
fi
node tests/browser/dashboard.mjs
