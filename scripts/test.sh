#!/usr/bin/env bash
# Runs every test: formatting, lints, unit, integration (real HTTP origin,
# filesystem, Garage S3), CLI and acceptance (cucumber) tests.
# Starts the test Garage (installing it first if missing: ~10-20 minutes once).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

eval "$(scripts/garage.sh start)"
cargo test --workspace --locked

# Contract: the running server's answers against its generated OpenAPI
# document (schemathesis, pinned; zero 5xx, zero schema violations).
bash scripts/contract.sh
