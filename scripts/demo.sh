#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the demo workload.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cargo build --release --workspace
# The vm backend's guest: kernel, static moat-agent, initramfs (cached; minutes on first use).
cargo run --release -q -p moat-artifacts --example build-guest

# ---- The demo ------------------------------------------------------------------------------------
# `moat run` of a workload printing what the container sees (pid 1, hostname, kernel, capabilities,
# cgroup limits), then, as backends land, the same on every backend and the comparison table.
# The CLI's owner fills this in.
# --------------------------------------------------------------------------------------------------
