#!/usr/bin/env bash
# W6: reload under load. Ours only (the peers have no reload): 100 conns x 100 msg/s echo for
# W6_SECONDS (9) s, `reload` at W6_RELOAD_AT (5) s, with W6_WORKERS ("1 4") business workers.
# Figures: lost messages (sent - received), closed connections (loader errors), max RTT,
# whether every business worker pid changed.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGETS=ours
bench_setup
file=$OUT/w6-reload-$STAMP.jsonl
for workers in ${W6_WORKERS:-1 4}; do
    for ((rep = 1; rep <= REPS; rep++)); do
        WORKERS=$workers target_start ours echo plain || { log "w6: ours did not start"; exit 1; }
        conf=$OUT/run-ours/bench.toml
        before=$("$OURS" status --json --conf "$conf" | python3 -c 'import json,sys; print(" ".join(sorted(str(p["pid"]) for p in json.load(sys.stdin)["processes"] if p["role"]=="worker")))')
        loader echo "$TARGET_URL" --conns "${W6_CONNS:-100}" --rate 100 --size 32 --duration "${W6_SECONDS:-9}" \
            --warmup 0 --label "ours-${workers}w" --rep "$rep" --json --quiet >"$OUT/w6.json" &
        lpid=$!
        sleep "${W6_RELOAD_AT:-5}" # the reload happens at this point of the run, by design
        reload_out=$("$OURS" reload --conf "$conf" 2>&1) || true
        wait "$lpid" || true
        after=$("$OURS" status --json --conf "$conf" | python3 -c 'import json,sys; print(" ".join(sorted(str(p["pid"]) for p in json.load(sys.stdin)["processes"] if p["role"]=="worker")))')
        target_stop
        changed=true
        for p in $before; do [[ " $after " == *" $p "* ]] && changed=false; done
        line=$(python3 - "$OUT/w6.json" "$workers" "$changed" "$reload_out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({
    "mode": "reload", "label": d["label"], "rep": d["rep"], "workers": int(sys.argv[2]),
    "sent": d["sent"], "received": d["received"], "lost": d["sent"] - d["received"],
    "closed_connections": d.get("errors", 0), "delivered_ratio": d["delivered_ratio"],
    "rtt_max_us": d["lat_us"]["max"], "rtt_p99_us": d["lat_us"]["p99"],
    "workers_replaced": sys.argv[3] == "true", "reload": sys.argv[4].strip(),
}))
PY
)
        printf '%s\n' "$line" >>"$file"
        echo "$line"
    done
done
