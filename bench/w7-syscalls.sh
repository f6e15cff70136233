#!/usr/bin/env bash
# W7: syscalls per echoed message, end to end (every process of the server tree), at
# W7_CONNS ("100 500") x 100 msg/s (10k and 50k msg/s), over W7_SECONDS (3) of a longer echo
# run. Counted with `perf stat` on the syscall tracepoints (in-kernel counters: the server
# runs at full speed); where perf cannot, with `strace -c -f` (ptrace slows the server, which
# then batches more and looks cheaper than it is: the JSON line says which tool counted).
# Figures: syscalls per message, epoll_ctl per message (0 in steady state is the goal).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup
file=$OUT/w7-syscalls-$STAMP.jsonl
secs=${W7_SECONDS:-3}
tool=strace
if perf stat -e raw_syscalls:sys_enter -e syscalls:sys_enter_epoll_ctl true >/dev/null 2>&1; then
    tool=perf
elif ! command -v strace >/dev/null; then
    log "w7: needs perf (linux-perf) or strace"
    exit 1
fi
for conns in ${W7_CONNS:-100 500}; do
    for t in $TARGETS; do
        target_start "$t" echo plain || { log "bench: $t skipped"; continue; }
        pids=$(tree_pids "$TARGET_PID" | paste -sd,)
        trace=$OUT/logs/w7-$t-$conns.$tool
        # The loader runs a second longer on each side of the counted window.
        loader echo "$TARGET_URL" --conns "$conns" --rate 100 --duration $((secs + 2)) --warmup 1 \
            --label "$t" --json --quiet >"$OUT/w7-loader.json" &
        lpid=$!
        sleep 1 # start of the counted window, inside the loader's measured run
        if [[ $tool == perf ]]; then
            perf stat -x, -e raw_syscalls:sys_enter -e syscalls:sys_enter_epoll_ctl -p "$pids" -o "$trace" -- sleep "$secs"
            total=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$trace")
            ctl=$(awk -F, '/sys_enter_epoll_ctl/ { print $1 }' "$trace")
        else
            args=()
            for p in ${pids//,/ }; do args+=(-p "$p"); done
            timeout -s INT "$secs" strace -c -f -o "$trace" "${args[@]}" 2>/dev/null || true
            total=$(awk '$NF == "total" { print $4 }' "$trace")
            ctl=$(awk '$NF == "epoll_ctl" { print $4 }' "$trace")
        fi
        wait "$lpid" || true
        target_stop
        rate=$(python3 -c 'import json; d=json.load(open("'"$OUT/w7-loader.json"'")); print(d["msgs_per_s"])')
        line=$(python3 - "$t" "$conns" "$secs" "$rate" "${total:-0}" "${ctl:-0}" "$tool" <<'PY'
import json, sys
t, conns, secs, rate, total, ctl, tool = sys.argv[1:]
msgs = float(rate) * float(secs)
print(json.dumps({"mode": "syscalls", "label": t, "conns": int(conns), "tool": tool,
    "msgs_per_s": float(rate), "messages": round(msgs), "syscalls": int(total),
    "syscalls_per_msg": round(int(total) / msgs, 3) if msgs else None,
    "epoll_ctl": int(ctl), "epoll_ctl_per_msg": round(int(ctl) / msgs, 5) if msgs else None}))
PY
)
        printf '%s\n' "$line" >>"$file"
        echo "$line"
    done
done
