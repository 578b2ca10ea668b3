#!/usr/bin/env bash
# bench/fleet.sh — build the release binaries, then run the fleet benchmark (needs root; minutes).
#   bash bench/fleet.sh [rollout-bench options]     e.g. --sizes 1,5,10,20 --runs 3 --out bench/results.json
# `scripts/dev bench` runs the machine set-up first and then this script. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(pwd)/target}
[[ $(id -u) == 0 ]] || { echo "bench: must run as root (the test fleet uses namespaces)" >&2; exit 1; }
echo "bench: cargo build --release --workspace --bins (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)" >&2
cargo build --release --workspace --bins
bin=$CARGO_TARGET_DIR/release
# Record what was measured: the commit, and whether the product's sources had uncommitted changes.
ROLLOUT_BENCH_REV="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- crates Cargo.toml Cargo.lock 2>/dev/null || ROLLOUT_BENCH_REV+="+dirty"
export ROLLOUT_BENCH_REV
exec "$bin/rollout-bench" --rollout "$bin/rollout" "$@"
