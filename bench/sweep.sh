#!/usr/bin/env bash
# W1 sweep for the plot: echo at increasing offered rates (SWEEP_CONNS (500) connections,
# SWEEP_RATES ("10 20 40 60 80 100") msg/s each: 5k to 50k msg/s), every target, REPS
# repetitions in alternation. Writes bench/out/w1-sweep-<stamp>.jsonl, then draws
# bench/w1-sweep.png with bench/plot.py (CPU µs/msg and p99 against the offered rate).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup
file=$OUT/w1-sweep-$STAMP.jsonl
conns=${SWEEP_CONNS:-500}
for rate in ${SWEEP_RATES:-10 20 40 60 80 100}; do
    for ((rep = 1; rep <= REPS; rep++)); do
        for t in $TARGETS; do
            target_start "$t" echo plain || { log "bench: $t skipped"; continue; }
            if line=$(loader echo "$TARGET_URL" --conns "$conns" --rate "$rate" --size 32 \
                --duration "${SWEEP_DURATION:-4}" --warmup 1 --label "$t" --rep "$rep" \
                --server-pid "$TARGET_PID" --json --quiet); then
                printf '%s\n' "$line" >>"$file"
                show "$line"
            fi
            target_stop
        done
    done
done
python3 "$BENCH_DIR/plot.py" "$file" "$BENCH_DIR/w1-sweep.png"
