#!/usr/bin/env bash
# The delivery node's resident memory and honest writers' throughput, with and without 1,000
# hostile slow connections (same run). See delivery/benches/hostile.rs.
# Usage: scripts/bench-hostile.sh [--attackers N] [--streams N] [--writers N] [--seconds N]
#   (DATABASE_URL: use that server instead of a throwaway one)
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"  # a socket for each attacker
source scripts/throwaway-postgres.sh
cargo bench -p mlschat-delivery --bench hostile -- "$@"
