#!/bin/sh
# Commit speed: conntrackd -c versus ctrack's batched commit, same flows,
# same run (root; FLOWS=50000 by default). The daemon-level bench/sync.sh
# (sync time, RSS) comes with ctrackd.
set -e
cd "$(dirname "$0")/.."
FLOWS=${FLOWS:-50000} cargo test --profile release-fast --test sync_bench -- --ignored --nocapture --test-threads=1 2>&1 |
	grep -E '^(flows|conntrackd|ctrack|commit|ratio)'
