# Sourced by test and benchmark scripts: unless DATABASE_URL is set, starts a throwaway
# Postgres cluster owned by the postgres user on a free loopback port, exports DATABASE_URL,
# and removes the cluster when the calling shell exits.
if [ -z "${DATABASE_URL:-}" ]; then
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pgdir=$(mktemp -d /tmp/mlschat-pg.XXXXXX)
  chown postgres: "$pgdir"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_postgres() { runuser -u postgres -- "$@"; }
  as_postgres "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust --no-sync >/dev/null
  as_postgres "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-p $port -k $pgdir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null
  stop_pg() {
    as_postgres "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"
  }
  trap stop_pg EXIT
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  export PGBIN="$pgbin"
  echo "throwaway Postgres at $DATABASE_URL" >&2
fi
