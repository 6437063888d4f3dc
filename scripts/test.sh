#!/usr/bin/env bash
# The test command: installs what is missing, builds everything in release mode, builds the cached
# artifacts the tests need, then runs the whole test suite. Its last lines are cargo test's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cargo build --release --workspace --all-targets
cargo test --release --workspace --no-fail-fast 2>&1
