#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the demo workload.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cargo build --release --workspace
