#!/usr/bin/env bash
# W5: idle memory. Holds W5_CONNS (10,000) connections on each target and reports the RSS of
# the server tree per connection (user space) and, apart, the kernel slab growth per
# connection (both ends of each loopback connection are in it).
# With W5_BIG=1 ours also holds W5_BIG_CONNS (100,000) connections across W5_GATEWAYS (6)
# gateway processes, opened by W5_LOADERS (6) loader processes from distinct source addresses.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup

# idle_run FILE LABEL CONNS LOADERS: the target is running; opens CONNS connections with
# LOADERS loader processes, measures, releases them, appends one JSON line to FILE.
idle_run() {
    local file=$1 label=$2 conns=$3 loaders=$4 i
    local per=$(((conns + loaders - 1) / loaders))
    local rss0 slab0 rss1 slab1 opened=0 failures=0 lpids=()
    rss0=$(tree_rss_kib "$TARGET_PID")
    slab0=$(slab_kib)
    rm -f "$OUT"/w5-ready.* "$OUT"/w5-loader.*.json
    for ((i = 0; i < loaders; i++)); do
        taskset -c "$LOADER_CPU" "$LOADER" idle "$TARGET_URL" --conns "$per" --inflight 256 --timeout 30 \
            --sources "127.0.$((10 + i)).1-127.0.$((10 + i)).2" \
            --ready-file "$OUT/w5-ready.$i" --json --quiet >"$OUT/w5-loader.$i.json" &
        lpids+=($!)
    done
    trap 'kill -TERM "${lpids[@]}" 2>/dev/null; target_stop' EXIT
    local deadline=$((SECONDS + 180)) ready=0
    while ((SECONDS < deadline)); do
        ready=0
        for ((i = 0; i < loaders; i++)); do
            if [[ -f $OUT/w5-ready.$i ]]; then ready=$((ready + 1)); fi
        done
        ((ready == loaders)) && break
        local alive=0
        for i in "${lpids[@]}"; do
            if kill -0 "$i" 2>/dev/null; then alive=$((alive + 1)); fi
        done
        ((alive + ready >= loaders)) || break
        sleep 0.2 # poll interval
    done
    rss1=$(tree_rss_kib "$TARGET_PID")
    slab1=$(slab_kib)
    for i in "${lpids[@]}"; do kill -TERM "$i" 2>/dev/null || true; done
    wait "${lpids[@]}" 2>/dev/null || true
    trap 'target_stop' EXIT
    for ((i = 0; i < loaders; i++)); do
        local f=$OUT/w5-loader.$i.json o fl
        o=$(grep -o '"opened":[0-9]*' "$f" | head -1 | cut -d: -f2)
        fl=$(grep -o '"failures":[0-9]*' "$f" | head -1 | cut -d: -f2)
        opened=$((opened + ${o:-0}))
        failures=$((failures + ${fl:-0}))
    done
    local n=$((opened > 0 ? opened : 1))
    local line
    line=$(printf '{"mode":"idle","label":"%s","rep":%s,"url":"%s","conns":%s,"loaders":%s,"opened":%s,"failures":%s,"server_rss_kib_before":%s,"server_rss_kib_after":%s,"server_bytes_per_conn":%s,"kernel_slab_kib_before":%s,"kernel_slab_kib_after":%s,"kernel_slab_bytes_per_conn_both_ends":%s,"server_procs":%s}' \
        "$label" "$rep" "$TARGET_URL" "$conns" "$loaders" "$opened" "$failures" "$rss0" "$rss1" \
        "$(((rss1 - rss0) * 1024 / n))" "$slab0" "$slab1" "$(((slab1 - slab0) * 1024 / n))" \
        "$(tree_pids "$TARGET_PID" | wc -l)")
    printf '%s\n' "$line" >>"$file"
    show "$line"
}

file=$OUT/w5-idle-$STAMP.jsonl
for rep in $(seq 1 "$REPS"); do
    for t in $TARGETS; do
        target_start "$t" echo plain || { log "bench: $t skipped"; continue; }
        idle_run "$file" "$t" "${W5_CONNS:-10000}" 1
        target_stop
    done
done
summarize "$file" --fields opened,failures,server_bytes_per_conn,kernel_slab_bytes_per_conn_both_ends

if [[ ${W5_BIG:-0} == 1 && " $TARGETS " == *" ours "* ]]; then
    big=$OUT/w5-idle-100k-$STAMP.jsonl
    rep=1
    if GATEWAYS=${W5_GATEWAYS:-6} MAX_CONNECTIONS=20000 target_start ours echo plain; then
        idle_run "$big" ours-100k "${W5_BIG_CONNS:-100000}" "${W5_LOADERS:-6}"
        target_stop
        summarize "$big" --fields opened,failures,server_bytes_per_conn,kernel_slab_bytes_per_conn_both_ends,server_procs
    fi
fi
