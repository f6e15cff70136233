#!/usr/bin/env bash
# Short fuzzing runs for CI: every cargo-fuzz target of fuzz/fuzz_targets/ for
# FUZZ_SECONDS (default 30) each, from the kept regression inputs, on top of the replay
# that `cargo test --test fuzz_regressions` does. Installs cargo-fuzz when it is missing.
# A crash fails the script; its input is in fuzz/artifacts/<target>/ (see fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
t0=$(date +%s)
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
t1=$(date +%s)
export RUSTC_BOOTSTRAP=1
# Start from the kept regression inputs (copied: libFuzzer adds to its corpus directory).
# The richer seed_corpora example costs another build of the fuzz crate (minutes in CI).
for dir in tests/fuzz_regressions/*/; do
  target=$(basename "$dir")
  mkdir -p "fuzz/corpus/${target}"
  cp -n "$dir"* "fuzz/corpus/${target}/" 2>/dev/null || true
done
cargo fuzz build
t2=$(date +%s)
mkdir -p fuzz/artifacts
for target in $(cargo fuzz list); do
  log="fuzz/artifacts/${target}.log"
  if ! cargo fuzz run "$target" -- -max_total_time="$seconds" -max_len=16384 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: ${target} failed; input in fuzz/artifacts/${target}/, output in ${log}" >&2
    exit 1
  fi
  runs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "fuzz: ${target}: ${seconds} s, ${runs:-?} inputs, no failure"
done
t3=$(date +%s)
echo "fuzz: install $((t1 - t0)) s, build $((t2 - t1)) s, runs $((t3 - t2)) s"
