#!/usr/bin/env bash
# W1: echo at a fixed rate, 32-byte text messages: 100 conns x 100 msg/s (10k msg/s) and
# 500 conns x 100 msg/s (50k msg/s), DURATION s after WARMUP s. Figures: server CPU µs/msg,
# p50/p99 round trip from the scheduled send time, delivered ratio.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup
for conns in ${W1_CONNS:-100 500}; do
    run_matrix "$OUT/w1-echo-${conns}x100-$STAMP.jsonl" echo plain \
        echo @URL@ --conns "$conns" --rate 100 --size 32 --duration "$DURATION" --warmup "$WARMUP"
done
