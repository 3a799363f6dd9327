#!/usr/bin/env bash
# Delivery node throughput next to raw Postgres (pgbench, same server, same run), with the CPU
# each operation cost per process. See delivery/benches/delivery.rs.
# Usage: scripts/bench-delivery.sh [seconds] [--pin 0:1] [--rounds N] [--subscribers N]
#   (DATABASE_URL: use that server instead of a throwaway one)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
shift || true
source scripts/throwaway-postgres.sh
cargo bench -p mlschat-delivery --bench delivery -- --writers 64 --seconds "$seconds" "$@"
