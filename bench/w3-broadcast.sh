#!/usr/bin/env bash
# W3: broadcast fan-out. 1 publisher, 1000 and 2000 receivers, 10 and 100 msg/s. Ours: the
# business worker sends every message to all (send_to_all); the peers send it to all others.
# Figures: server CPU µs per delivery, delivered ratio, p99 from the scheduled publish time.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup
for receivers in ${W3_RECEIVERS:-1000 2000}; do
    for rate in ${W3_RATES:-10 100}; do
        run_matrix "$OUT/w3-broadcast-${receivers}r-${rate}hz-$STAMP.jsonl" broadcast plain \
            broadcast @URL@ --conns "$receivers" --rate "$rate" --size 32 \
            --duration "${W3_DURATION:-$DURATION}" --warmup "$WARMUP"
    done
done
