#!/usr/bin/env bash
# W8: TLS. For each target, W1 (100 conns x 100 msg/s) and W4 (W8_CONNECTS = 2,000 connects)
# over ws and over wss in the same repetition. Figures: CPU µs/msg and accepts/s, wss/plain.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup
for t in $TARGETS; do
    echo_file=$OUT/w8-tls-echo-$t-$STAMP.jsonl
    storm_file=$OUT/w8-tls-storm-$t-$STAMP.jsonl
    for rep in $(seq 1 "$REPS"); do
        for tls in plain tls; do
            extra=()
            [[ $tls == tls ]] && extra=(--insecure)
            target_start "$t" echo "$tls" || { log "bench: $t ($tls) skipped"; continue; }
            if line=$(loader echo "$TARGET_URL" "${extra[@]}" --conns 100 --rate 100 --duration "$DURATION" \
                --warmup "$WARMUP" --label "$tls" --rep "$rep" --server-pid "$TARGET_PID" --json --quiet); then
                printf '%s\n' "$line" >>"$echo_file"
                show "$line"
            fi
            if line=$(loader storm "$TARGET_URL" "${extra[@]}" --conns "${W8_CONNECTS:-2000}" --inflight 256 \
                --timeout 30 --label "$tls" --rep "$rep" --server-pid "$TARGET_PID" --json --quiet); then
                printf '%s\n' "$line" >>"$storm_file"
                show "$line"
            fi
            target_stop
        done
    done
    BASE=plain summarize "$echo_file"
    BASE=plain summarize "$storm_file"
done
