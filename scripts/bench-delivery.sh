#!/usr/bin/env bash
# Delivery node throughput next to raw Postgres, same server, same run: pgbench inserting 1 KiB
# rows with 64 clients (one row per transaction, and ten), then the node's benchmark.
# Usage: scripts/bench-delivery.sh [seconds]   (DATABASE_URL: use that server instead)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
source scripts/throwaway-postgres.sh
pgbench=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}/pgbench

psql -q "$DATABASE_URL" -c "DROP TABLE IF EXISTS raw_rows; CREATE TABLE raw_rows (id BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)"
work=$(mktemp -d)
echo "INSERT INTO raw_rows (payload) VALUES (decode(repeat('5a', 1024), 'hex'));" > "$work/one.sql"
{ echo "BEGIN;"; for _ in $(seq 10); do cat "$work/one.sql"; done; echo "COMMIT;"; } > "$work/ten.sql"
for script in one ten; do
  tps=$("$pgbench" -n -c 64 -j 2 -T "$seconds" -f "$work/$script.sql" "$DATABASE_URL" 2>/dev/null \
    | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  rows=$(python3 -c "print(round($tps * (10 if '$script' == 'ten' else 1)))")
  echo "raw Postgres, $script row(s) per transaction (64 clients, 1 KiB): $rows rows/s ($tps tps)"
done
rm -rf "$work"
cargo bench -p mlschat-delivery --bench delivery -- --writers 64 --seconds "$seconds"
