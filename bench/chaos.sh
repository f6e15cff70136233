#!/usr/bin/env bash
# Failure drill: a cluster on this machine (network namespaces: a master machine and two
# worker machines) under mixed, accounted load while faults are injected at random times
# drawn from a seed; prints the table of sent / delivered once / duplicated / lost per fault
# and client class, and a `CHAOS_RESULT {json}` line. Exits non-zero on any unexpected loss,
# duplicate, unexplained disconnection, leaked process or descriptor, or growing memory.
# Needs root (namespaces, a tmpfs for the full-disk fault). The drill is tests/chaos.rs.
#
#   bench/chaos.sh                       # 15 minutes, a new seed
#   CHAOS_SECONDS=60 CHAOS_SEED=1 bench/chaos.sh
#
# Output is also written to bench/out/chaos-<seed>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_SECONDS="${CHAOS_SECONDS:-900}"
export CHAOS_SEED="${CHAOS_SEED:-$(( $(date +%s) % 1000000 ))}"
echo "chaos drill: ${CHAOS_SECONDS} s, seed ${CHAOS_SEED} (replay: CHAOS_SEED=${CHAOS_SEED} CHAOS_SECONDS=${CHAOS_SECONDS} bench/chaos.sh)"
mkdir -p bench/out
log="bench/out/chaos-${CHAOS_SEED}.log"
cargo build --release --quiet
set +e
cargo test --release --quiet --test chaos -- --ignored --nocapture --exact chaos_drill 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "chaos drill: exit ${status}, seed ${CHAOS_SEED}, log ${log}"
exit "$status"
