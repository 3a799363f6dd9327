#!/usr/bin/env bash
# The delivery node's resident memory and honest writers' throughput, with and without 1,000
# hostile slow connections (same run), see delivery/benches/hostile.rs; then honest members'
# adds, posts and catch-ups with and without a flood of strangers draining and filling a
# victim's KeyPackages and mailbox (same run), see delivery/benches/strangers.rs.
# Usage: scripts/bench-hostile.sh [--attackers N] [--streams N] [--writers N] [--seconds N]
#                                 [--strangers N] [--members N]
#   (DATABASE_URL: use that server instead of a throwaway one)
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"  # a socket for each attacker
source scripts/throwaway-postgres.sh
cargo bench -p mlschat-delivery --bench hostile -- "$@"
cargo bench -p mlschat-delivery --bench strangers -- "$@"
