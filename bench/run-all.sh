#!/usr/bin/env bash
# Every workload in turn, W1-W8, then the W1 sweep that draws bench/w1-sweep.png, then the
# ratio table of the whole run (bench/table.py). About 20 minutes on a 2-core machine with the
# three targets and REPS=3 (the sweep runs SWEEP_REPS=1 repetition per rate by default).
# The raw lines go to bench/out/<workload>-<STAMP>.jsonl, the table also to
# bench/out/table-<STAMP>.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export STAMP=${STAMP:-$(date +%Y%m%d-%H%M%S)}
export W3_DURATION=${W3_DURATION:-4}
export W5_BIG=${W5_BIG:-1} # ours also holds 100k idle connections over several gateways
started=$(date +%s)
for w in w1-echo w2-closed w3-broadcast w4-storm w5-idle w6-reload w7-syscalls w8-tls; do
    echo "#### $w ($(( $(date +%s) - started )) s)"
    bash "$here/$w.sh"
done
if [[ ${SWEEP:-1} == 1 ]]; then
    echo "#### sweep ($(( $(date +%s) - started )) s)"
    REPS=${SWEEP_REPS:-1} bash "$here/sweep.sh" || echo "sweep: failed (is python3-matplotlib installed?)"
fi
out=${BENCH_OUT:-$here/out}
echo "#### table of run $STAMP ($(( $(date +%s) - started )) s in all)"
python3 "$here/table.py" "$STAMP" "$out" | tee "$out/table-$STAMP.md"
