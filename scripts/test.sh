#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the build needs, starts a
# throwaway Postgres unless DATABASE_URL names one, then `cargo test`, then a short fuzzing run.
# This is the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build needs, and a PostgreSQL server unless DATABASE_URL names one.
# A C++ compiler builds libFuzzer for the fuzzing run; tmux gives the chat test a terminal.
EXTRA_PACKAGES_IF_MISSING="c++:g++ tmux:tmux"
if [ -z "${DATABASE_URL:-}" ]; then
  EXTRA_PACKAGES_IF_MISSING="$EXTRA_PACKAGES_IF_MISSING /usr/lib/postgresql/*/bin/initdb:postgresql"
fi
source scripts/prerequisites.sh

# Postgres for the delivery node's tests, unless DATABASE_URL names one.
source scripts/throwaway-postgres.sh

# A clean clone builds everything once: incremental caches would only take disk (CI's is shared).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Formatting and lints first: they are cheap, and a red one means nothing lands.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings

cargo test --workspace --locked "$@"

# Every decoder the node and the peer expose to the network or to files, fuzzed 20 s each
# (nightly and cargo-fuzz; a long run is `scripts/fuzz.sh 3600`).
./scripts/fuzz.sh 20
