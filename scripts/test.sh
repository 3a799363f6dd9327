#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: installs what the build needs, then
# `cargo test`. This is the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# SQLCipher (bundled by rusqlite) links OpenSSL's libcrypto, found through pkg-config.
missing=()
command -v pkg-config >/dev/null || missing+=(pkg-config)
pkg-config --exists libcrypto 2>/dev/null || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --workspace --locked "$@"
