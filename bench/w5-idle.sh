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
    local file=$1 label=$2 conns=$3 loaders=$4
    local rss0 slab0 rss1 slab1
    rss0=$(tree_rss_kib "$TARGET_PID")
    slab0=$(slab_kib)
    idle_open w5 "$conns" "$loaders"
    rss1=$(tree_rss_kib "$TARGET_PID")
    slab1=$(slab_kib)
    idle_close
    local opened=$IDLE_OPENED n=$((IDLE_OPENED > 0 ? IDLE_OPENED : 1))
    local line
    line=$(printf '{"mode":"idle","label":"%s","rep":%s,"url":"%s","conns":%s,"loaders":%s,"opened":%s,"failures":%s,"server_rss_kib_before":%s,"server_rss_kib_after":%s,"server_bytes_per_conn":%s,"kernel_slab_kib_before":%s,"kernel_slab_kib_after":%s,"kernel_slab_bytes_per_conn_both_ends":%s,"server_procs":%s}' \
        "$label" "$rep" "$TARGET_URL" "$conns" "$loaders" "$opened" "$IDLE_FAILURES" "$rss0" "$rss1" \
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
