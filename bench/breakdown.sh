#!/usr/bin/env bash
# Where a workload's server CPU goes, per target: user vs kernel time, syscalls and context
# switches per message (or per delivery), over BD_SECONDS (4) inside a longer loader run.
#   bash bench/breakdown.sh echo --conns 50 --closed              # W2
#   bash bench/breakdown.sh broadcast --conns 1000 --rate 100     # W3 at 100k deliveries/s
# The loader arguments follow the mode (see `gw-bench --help`); the URL is the target's.
# Syscalls are counted with perf's syscall tracepoint (in-kernel counters), user and kernel
# time from /proc/PID/stat (ticks), context switches from /proc/PID/status. One JSON line per
# target to bench/out/breakdown-<stamp>.jsonl, and on the terminal.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
(($# >= 1)) || { log "usage: bench/breakdown.sh MODE [LOADER-ARGS...]"; exit 64; }
mode=$1
shift
app=echo
[[ $mode == broadcast ]] && app=broadcast
bench_setup
file=$OUT/breakdown-$STAMP.jsonl
secs=${BD_SECONDS:-4}

for t in $TARGETS; do
    target_start "$t" "$app" plain || { log "bench: $t skipped"; continue; }
    pids=$(tree_pids "$TARGET_PID" | paste -sd,)
    loader "$mode" "$TARGET_URL" "$@" --duration $((secs + 2)) --warmup 1 --label "$t" --json --quiet \
        >"$OUT/breakdown-loader.json" &
    lpid=$!
    sleep 1.5 # start of the counted window, inside the loader's measured run
    read -r u0 s0 c0 < <(tree_counters "$TARGET_PID")
    perf stat -x, -e raw_syscalls:sys_enter -p "$pids" -o "$OUT/logs/breakdown-$t.perf" -- sleep "$secs"
    read -r u1 s1 c1 < <(tree_counters "$TARGET_PID")
    wait "$lpid" || true
    target_stop
    syscalls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$OUT/logs/breakdown-$t.perf")
    line=$(python3 - "$t" "$mode" "$secs" "$OUT/breakdown-loader.json" "$((u1 - u0))" "$((s1 - s0))" \
        "$((c1 - c0))" "${syscalls:-0}" "$(getconf CLK_TCK)" "$*" <<'PY'
import json, sys
t, mode, secs, path, u, s, c, sc, tck, args = sys.argv[1:]
d = json.load(open(path))
rate = d.get("deliveries_per_s") or d.get("msgs_per_s") or 0
units = float(rate) * float(secs)
u, s, c, sc, tck = int(u), int(s), int(c), int(sc), int(tck)
per = lambda x: round(x / units, 3) if units else None
print(json.dumps({
    "mode": "breakdown", "label": t, "workload": f"{mode} {args}", "per": "delivery" if mode == "broadcast" else "msg",
    "rate": rate, "delivered_ratio": d.get("delivered_ratio"), "loader_cpu_pct": d.get("loader_cpu_pct"),
    "server_cpu_pct": round(100 * (u + s) / tck / float(secs), 1),
    "user_share": round(u / (u + s), 3) if u + s else None,
    "cpu_us_per": per((u + s) * 1e6 / tck), "user_us_per": per(u * 1e6 / tck), "kernel_us_per": per(s * 1e6 / tck),
    "syscalls_per": per(sc), "ctx_switches_per": per(c)}))
PY
)
    printf '%s\n' "$line" | tee -a "$file"
done
