#!/usr/bin/env bash
# The test command: installs what is missing, builds everything in release mode, builds the cached
# artifacts the tests need, then runs the whole test suite. Its last lines are cargo test's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cargo build --release --workspace --all-targets

# ---- Cached artifacts the tests need -------------------------------------------------------------
# Each step builds through moat's content-hash cache, so it is instant when its inputs are unchanged.
# The busybox/pause test images need no step: tests build them on first use (about a second).
# Guest kernel (Linux 6.12, kernel-config/; minutes on first use), static moat-agent and its initramfs:
cargo run --release -q -p moat-artifacts --example build-guest
# --------------------------------------------------------------------------------------------------

# Last, so that the output ends with cargo test's summary.
cargo test --release --workspace --no-fail-fast 2>&1
