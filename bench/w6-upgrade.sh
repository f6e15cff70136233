#!/usr/bin/env bash
# W6 through `upgrade` beside `reload`: the W6 load (100 conns x 100 msg/s echo = 10k msg/s)
# for W6_SECONDS (12) s, the switch at W6_SWITCH_AT (4) s, each mode of W6_MODES ("reload
# upgrade") in turn, with W6_WORKERS ("1 4") business workers, REPS repetitions; mode `none`
# runs the same load with no switch (the run's max RTT without one). `upgrade` replaces every
# process (the master in place) by the binary on disk: here the same build, so the figures
# are those of the switch itself.
# Figures: lost messages (sent - received), closed connections (loader errors), max RTT (the
# switch is the only event of the run), how long the command took, and what it replaced.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TARGETS=ours
bench_setup
file=$OUT/w6-upgrade-$STAMP.jsonl
# "role:pid ..." of every process of the running cluster, sorted.
procs() {
    "$OURS" status --json --conf "$1" | python3 -c 'import json,sys; print(" ".join(sorted("%s:%s" % (p["role"], p["pid"]) for p in json.load(sys.stdin)["processes"])))'
}
for workers in ${W6_WORKERS:-1 4}; do
    for ((rep = 1; rep <= REPS; rep++)); do
        for mode in ${W6_MODES:-reload upgrade}; do
            WORKERS=$workers target_start ours echo plain || { log "w6: ours did not start"; exit 1; }
            conf=$OUT/run-ours/bench.toml
            before=$(procs "$conf")
            loader echo "$TARGET_URL" --conns "${W6_CONNS:-100}" --rate 100 --size 32 --duration "${W6_SECONDS:-12}" \
                --warmup 0 --label "$mode-${workers}w" --rep "$rep" --json --quiet >"$OUT/w6.json" &
            lpid=$!
            sleep "${W6_SWITCH_AT:-4}" # the switch happens at this point of the run, by design
            t0=$(date +%s%N)
            rc=0
            switch_out="no switch"
            [[ $mode == none ]] || switch_out=$("$OURS" "$mode" --conf "$conf" 2>&1) || rc=$?
            t1=$(date +%s%N)
            wait "$lpid" || true
            after=$(procs "$conf")
            target_stop
            line=$(python3 - "$OUT/w6.json" "$mode" "$workers" "$rc" "$(((t1 - t0) / 1000000))" "$before" "$after" "$switch_out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
mode, workers, rc, ms = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
before = dict(reversed(p.split(":")) for p in sys.argv[6].split())
after = dict(reversed(p.split(":")) for p in sys.argv[7].split())
roles = lambda m: sorted(set(m.values()))
# A role is replaced when none of its pids is left; the master must keep its pid.
replaced = [r for r in roles(before) if r != "master"
            and not {p for p, x in before.items() if x == r} & {p for p, x in after.items() if x == r}]
master_kept = [p for p, r in before.items() if r == "master"] == [p for p, r in after.items() if r == "master"]
print(json.dumps({
    "mode": mode, "label": d["label"], "rep": d["rep"], "workers": workers,
    "sent": d["sent"], "received": d["received"], "lost": d["sent"] - d["received"],
    "closed_connections": d.get("errors", 0), "delivered_ratio": d["delivered_ratio"],
    "rtt_max_us": d["lat_us"]["max"], "rtt_p99_us": d["lat_us"]["p99"],
    "switch_ms": ms, "switch_rc": rc, "replaced": replaced, "master_kept": master_kept,
    "output": sys.argv[8].strip().splitlines()[-1:] ,
}))
PY
)
            printf '%s\n' "$line" >>"$file"
            echo "$line"
        done
    done
done
python3 - "$file" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
labels = sorted({r["label"] for r in rows}, key=lambda l: (int(l.split("-")[1][:-1]), l))
med = lambda l, k: statistics.median(r[k] for r in rows if r["label"] == l)
worst = lambda l, k: max(r[k] for r in rows if r["label"] == l)
print("\n| figure | " + " | ".join(labels) + " |")
print("|---|" + "---|" * len(labels))
for name, f in [
    ("lost messages (worst)", lambda l: worst(l, "lost")),
    ("closed connections (worst)", lambda l: worst(l, "closed_connections")),
    ("max RTT µs (median)", lambda l: f'{med(l, "rtt_max_us"):,.0f}'),
    ("max RTT µs (worst)", lambda l: f'{worst(l, "rtt_max_us"):,}'),
    ("command took ms (median)", lambda l: f'{med(l, "switch_ms"):,.0f}'),
    ("command failed", lambda l: sum(r["switch_rc"] != 0 for r in rows if r["label"] == l)),
    ("replaced", lambda l: " ".join(next(r["replaced"] for r in rows if r["label"] == l)) or "-"),
    ("master kept its pid", lambda l: all(r["master_kept"] for r in rows if r["label"] == l)),
]:
    print(f"| {name} | " + " | ".join(str(f(l)) for l in labels) + " |")
PY
