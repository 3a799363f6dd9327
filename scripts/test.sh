#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the build needs, starts a
# throwaway Postgres unless DATABASE_URL names one, then `cargo test`. This is the README's test
# command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: OpenSSL's libcrypto for SQLCipher (found through pkg-config), and a
# PostgreSQL server for the delivery node's tests.
missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists libcrypto 2>/dev/null || missing+=(libssl-dev)
if [ -z "${DATABASE_URL:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -z "${DATABASE_URL:-}" ]; then
  # A throwaway cluster owned by the postgres user, on a free loopback port, gone on exit.
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pgdir=$(mktemp -d /tmp/mlschat-pg.XXXXXX)
  chown postgres: "$pgdir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_postgres() { runuser -u postgres -- "$@"; }
  as_postgres "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust --no-sync >/dev/null
  as_postgres "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  stop_pg() {
    as_postgres "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"
  }
  trap stop_pg EXIT
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "throwaway Postgres at $DATABASE_URL" >&2
fi

cargo test --workspace --locked "$@"
