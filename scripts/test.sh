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

# Postgres for the delivery node's tests, unless DATABASE_URL names one.
source scripts/throwaway-postgres.sh

cargo test --workspace --locked "$@"
