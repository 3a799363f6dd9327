#!/usr/bin/env bash
# The main job: `mlschat-demo` — an embedded delivery node (SQLite) and four people, each a real
# process, play a group's life; every member must end with the same epoch authenticator.
# Usage: scripts/demo.sh [--dir DIR]   (DIR keeps the files and logs; default: a temporary one)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prerequisites.sh
cargo build --quiet -p mlschat-cli -p mlschat-delivery -p mlschat-tests \
  --bin mlschat --bin mlschat-delivery --bin mlschat-demo
exec ./target/debug/mlschat-demo "$@"
