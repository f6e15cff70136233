#!/usr/bin/env bash
# W7: syscalls per echoed message, end to end: W1 at 10k msg/s (100 conns x 100 msg/s) for
# W7_SECONDS (3) under `strace -c -f` attached to every process of the server tree.
# Figures: syscalls per message (all processes), epoll_ctl per message.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup
command -v strace >/dev/null || { log "w7: strace is needed (apt-get install strace)"; exit 1; }
file=$OUT/w7-syscalls-$STAMP.jsonl
for t in $TARGETS; do
    target_start "$t" echo plain || { log "bench: $t skipped"; continue; }
    trace=$OUT/logs/w7-$t.strace
    args=()
    for p in $(tree_pids "$TARGET_PID"); do args+=(-p "$p"); done
    strace -c -f -o "$trace" "${args[@]}" 2>/dev/null &
    spid=$!
    # Wait until every process of the tree is traced.
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        untraced=0
        for p in $(tree_pids "$TARGET_PID"); do
            [[ $(awk '/^TracerPid:/ { print $2 }' "/proc/$p/status" 2>/dev/null) == 0 ]] && untraced=1
        done
        ((untraced == 0)) && break
        sleep 0.05 # poll interval
    done
    out=$(loader echo "$TARGET_URL" --conns 100 --rate 100 --duration "${W7_SECONDS:-3}" --warmup 0 \
        --label "$t" --json --quiet) || true
    kill -INT "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    target_stop
    sent=$(grep -o '"sent":[0-9]*' <<<"$out" | cut -d: -f2)
    total=$(awk '$NF == "total" { print $4 }' "$trace")
    ctl=$(awk '$NF == "epoll_ctl" { print $4 }' "$trace")
    line=$(awk -v t="$t" -v sent="${sent:-0}" -v total="${total:-0}" -v ctl="${ctl:-0}" 'BEGIN {
        s = sent > 0 ? sent : 1
        printf "{\"mode\":\"syscalls\",\"label\":\"%s\",\"messages\":%d,\"syscalls\":%d,\"syscalls_per_msg\":%.3f,\"epoll_ctl\":%d,\"epoll_ctl_per_msg\":%.4f}\n", t, sent, total, total / s, ctl, ctl / s }')
    printf '%s\n' "$line" >>"$file"
    echo "$line"
    echo "   top syscalls of $t:"
    sed -n '3,10p' "$trace" | awk '{ printf "     %-16s %s\n", $NF, $4 }'
done
