#!/usr/bin/env bash
# Fairness under flood: the round trip of well-behaved clients (FAIR_CONNS connections x 100
# msg/s, 32-byte text, through GATEWAYS=2 gateways and WORKERS=2 business workers of the echo
# app) while 0, 1 and 4 connections of `gw-bench flood` send small messages as fast as they
# can and never read. Figures: p50/p99 round trip, delivered ratio of the well-behaved clients.
#
# Old against new (the binary before flow control, built by bench/build-base.sh):
#   OURS_BASE=$(bash bench/build-base.sh REV) bash bench/fairness.sh
# Targets default to "ours-base ours" (BASE=ours-base), alternating per repetition. W1 and W2
# with nobody flooding, old against new, are the usual scripts with the same targets:
#   OURS_BASE=... TARGETS="ours-base ours" BASE=ours-base bash bench/w1-echo.sh (and w2-closed.sh)
#
# Knobs (besides lib.sh's): FLOODERS ("0 1 4"), FAIR_CONNS (100), FLOOD_CPU (the loader's CPU
# unless set: the flood loader and the echo loader then share it).
export TARGETS=${TARGETS:-ours-base ours}
export BASE=${BASE:-ours-base}
export GATEWAYS=${GATEWAYS:-2} WORKERS=${WORKERS:-2}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
FLOODERS=${FLOODERS:-0 1 4}
FAIR_CONNS=${FAIR_CONNS:-100}
FLOOD_CPU=${FLOOD_CPU:-$LOADER_CPU}
bench_setup
FILE=$OUT/fairness-$STAMP.jsonl
FLOOD_FILE=$OUT/fairness-flood-$STAMP.jsonl

# fair_run TARGET N REP: the well-behaved load against the running target beside N flooders.
fair_run() {
    local t=$1 n=$2 rep=$3 flood_pid="" line
    if ((n > 0)); then
        taskset -c "$FLOOD_CPU" "$LOADER" flood "$TARGET_URL" --conns "$n" --size 32 \
            --duration $((WARMUP + DURATION + 60)) --label "$t-flood$n" --rep "$rep" --json --quiet \
            >>"$FLOOD_FILE" &
        flood_pid=$!
    fi
    if line=$(loader echo "$TARGET_URL" --conns "$FAIR_CONNS" --rate 100 --size 32 --duration "$DURATION" \
        --warmup "$WARMUP" --label "$t-flood$n" --rep "$rep" --server-pid "$TARGET_PID" --json --quiet); then
        printf '%s\n' "$line" >>"$FILE"
        show "$line"
    else
        log "bench: loader failed against $t with $n flooders (rep $rep)"
    fi
    if [[ -n $flood_pid ]]; then
        kill -INT "$flood_pid" 2>/dev/null || true
        wait "$flood_pid" || log "bench: the flood loader failed against $t (rep $rep)"
    fi
}

for rep in $(seq 1 "$REPS"); do
    for n in $FLOODERS; do
        for t in $TARGETS; do
            if ! target_start "$t" echo plain; then
                log "bench: $t skipped ($n flooders, rep $rep)"
                continue
            fi
            fair_run "$t" "$n" "$rep"
            target_stop
        done
    done
done
summarize "$FILE" --base "$BASE-flood0"
[[ -s $FLOOD_FILE ]] && log "bench: flood loaders' lines (messages sent per second) in $FLOOD_FILE"
