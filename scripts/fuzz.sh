#!/usr/bin/env bash
# Fuzzes every decoder the delivery node and the peer expose to the network or to files
# (fuzz/fuzz_targets, cargo-fuzz with libFuzzer on the nightly toolchain): each target for
# SECONDS, growing its corpus in fuzz/corpus. The test command runs it for 20 s a target; a
# long run is `scripts/fuzz.sh 3600` (results in docs/BENCHMARKS.md, "Fuzzing").
# Usage: scripts/fuzz.sh [seconds per target] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal || {
    echo "fuzzing needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
  }
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cd fuzz
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in "${targets[@]}"; do
  echo "fuzzing $target for ${seconds}s" >&2
  # A crash, a panic, a leak or a timeout fails the run and leaves the input that caused it in
  # fuzz/artifacts/$target.
  if ! cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$log" || true
done
