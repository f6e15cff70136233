#!/usr/bin/env bash
# W10: a million idle websocket connections held by ours (bench/README.md, the method document).
#
# Starts ours with one websocket gateway group of W10_GATEWAYS (60) processes, max_connections
# 20000 each (the per-process fd limit here is 20,000), one business worker (echo) and the
# register, the whole tree on SERVER_CPU; opens W10_CONNS (1,000,000) connections with
# W10_LOADERS (60) `gw-bench idle` processes on LOADER_CPU, loader i binding to
# 127.0.(10+i).1-127.0.(10+i).W10_SOURCES (2); holds them W10_HOLD seconds (3 ping intervals)
# and reports, in one JSON line (bench/out/w10-million-STAMP.jsonl) and a summary on stderr:
# connections reached, connect rate, user-space bytes per connection (RSS growth of the
# server tree / connections), kernel bytes per connection (slab growth / connections: both
# ends of every loopback connection are in it), the master's CPU and RSS, how long `status`
# and `status --json` take, and whether the heartbeat held the connections (still open after
# the hold; pings sent per second from the gateways' bytes_written; pings the clients got).
#
# Heartbeat: ping_interval W10_PING_INTERVAL (25 s), ping_data '{"type":"ping"}',
# ping_not_response_limit W10_PING_LIMIT (0). The gateway sends ping_data as a text message
# through the client protocol (as GatewayWorker does); the loader counts such messages and
# does not answer them, so with a limit > 0 every silent client would be closed after
# limit x interval + interval/2. 0 is GatewayWorker's documented "the server pings, clients need
# not answer" deployment (keeps NAT and proxies from dropping idle connections).
#
# Sysctls: none is changed unless needed: fs.file-max is raised if below 2 x conns + 100k,
# nf_conntrack_max if connection tracking is active (nf_conntrack_count > 0) and below
# conns + 100k; W10_SYSCTL="key=value ..." raises more. Every change is restored at exit.
# Other knobs: W10_INFLIGHT (64 handshakes in flight per loader), W10_DEADLINE (900 s for all
# connects), W10_STATUS_RUNS (5), W10_MAX_CONNECTIONS (20000); ports PORT_OURS (7710),
# PORT_REGISTER (1710), START_PORT (2710): apart from the other workloads' defaults, so that
# another benchmark can run meanwhile.
: "${PORT_OURS:=7710}" "${PORT_REGISTER:=1710}" "${START_PORT:=2710}"
TARGETS=ours
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $OURS_RUN == "$OUT/run-ours" ]] && OURS_RUN=$OUT/run-w10

CONNS=${W10_CONNS:-1000000}
NGW=${W10_GATEWAYS:-60}
NLOAD=${W10_LOADERS:-60}
NSRC=${W10_SOURCES:-2}
PING_INTERVAL=${W10_PING_INTERVAL:-25}
PING_LIMIT=${W10_PING_LIMIT:-0}
PING_DATA='{"type":"ping"}'
HOLD=${W10_HOLD:-$((3 * PING_INTERVAL))}
RUNS=${W10_STATUS_RUNS:-5}
CONF=$OURS_RUN/bench.toml

command -v jq >/dev/null || { log "w10: needs jq"; exit 1; }
per=$(((CONNS + NLOAD - 1) / NLOAD))
if ((per > $(ulimit -Hn) - 100 || per > NSRC * 28000)); then
    log "w10: $per connections per loader: above the fd limit ($(ulimit -Hn)) or $NSRC x 28k ports; raise W10_LOADERS or W10_SOURCES"
    exit 1
fi

# --- sysctls raised for this run only -------------------------------------------------------
SYSCTL_SAVED=()
sysctl_raise() { # KEY VALUE
    local old
    old=$(sysctl -n "$1") || return 1
    SYSCTL_SAVED+=("$1=$old")
    sysctl -qw "$1=$2" && log "w10: sysctl $1: $old -> $2 (restored at exit)"
}
sysctl_restore() {
    local i kv
    for ((i = ${#SYSCTL_SAVED[@]} - 1; i >= 0; i--)); do
        kv=${SYSCTL_SAVED[i]}
        sysctl -qw "${kv%%=*}=${kv#*=}" && log "w10: sysctl ${kv%%=*} restored to ${kv#*=}"
    done
    SYSCTL_SAVED=()
}
w10_cleanup() {
    bench_cleanup
    sysctl_restore
}
trap 'w10_cleanup' EXIT

need=$((2 * CONNS + 100000))
if (($(sysctl -n fs.file-max) < need)); then sysctl_raise fs.file-max "$need"; fi
if [[ -r /proc/sys/net/netfilter/nf_conntrack_count ]] && (($(cat /proc/sys/net/netfilter/nf_conntrack_count) > 0)) &&
    (($(sysctl -n net.netfilter.nf_conntrack_max) < CONNS + 100000)); then
    sysctl_raise net.netfilter.nf_conntrack_max $((CONNS + 100000))
fi
for kv in ${W10_SYSCTL:-}; do sysctl_raise "${kv%%=*}" "${kv#*=}"; done

# --- readings ---------------------------------------------------------------------------------
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mem_available_kib() { awk '/^MemAvailable:/ { print $2 }' /proc/meminfo; }
tcp_inuse() { awk '/^TCP:/ { print $3 }' /proc/net/sockstat; }
tcp_mem_pages() { awk '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
conntrack_count() { cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo null; }
# CPU milliseconds the processes PID... have run (the scheduler's exact runtime of every thread).
cpu_ms() {
    local p files=()
    for p in "$@"; do files+=(/proc/"$p"/task/*/sched); done
    cat "${files[@]}" 2>/dev/null | awk '/^se.sum_exec_runtime/ { ms += $3 } END { printf "%.0f", ms }'
}
proc_rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
status_json() { "$OURS" status --json --conf "$CONF" 2>/dev/null; }
# gateway figures of one `status --json`: "connections_sum min max bytes_written_sum count"
gateway_figures() {
    jq -r '[.processes[] | select(.role == "gateway")] |
        "\(map(.connections) | add // 0) \(map(.connections) | min // 0) \(map(.connections) | max // 0) \(map(.bytes_written) | add // 0) \(length)"' 2>/dev/null ||
        echo "0 0 0 0 0"
}
# time_ms CMD...: milliseconds one run of CMD takes (its output discarded).
time_ms() {
    local t0=$EPOCHREALTIME
    "$@" >/dev/null 2>&1
    awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }'
}
tree_cpu_ms() {
    local pids
    mapfile -t pids < <(tree_pids "$1")
    cpu_ms "${pids[@]}"
}
# pct MS SECONDS: MS of CPU over SECONDS of wall time, in % of one core.
pct() { awk -v t="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0 ? t / 10 / s : 0) }'; }
# Progress of the connects (called by idle_open every 10 s).
idle_progress() {
    log "w10: $(date -u +%T) TCP sockets in use $(tcp_inuse), tcp mem $(tcp_mem_pages) pages, MemAvailable $(($(mem_available_kib) / 1024)) MiB, slab $(($(slab_kib) / 1024)) MiB, load $(cut -d' ' -f1 /proc/loadavg)"
}

bench_setup
dmesg_from=$( (dmesg 2>/dev/null || true) | wc -l)
load1=$(cut -d' ' -f1 /proc/loadavg)
log "w10: $CONNS connections, $NGW gateways, $NLOAD loaders x $per over $NSRC source addresses each, heartbeat $PING_INTERVAL s (limit $PING_LIMIT), hold $HOLD s; load $load1"

tcp0=$(tcp_inuse)
mem0=$(mem_available_kib)
GATEWAYS=$NGW WORKERS=1 MAX_CONNECTIONS=${W10_MAX_CONNECTIONS:-20000} \
    target_start ours echo plain || { log "w10: ours did not start"; exit 1; }
master=$TARGET_PID
deadline=$((SECONDS + 60))
until (($(tree_pids "$master" | wc -l) >= NGW + 3)) || ((SECONDS > deadline)); do sleep 0.2; done # poll interval
for p in $(tree_pids "$master"); do taskset -a -cp "$SERVER_CPU" "$p" >/dev/null 2>&1 || true; done
procs=$(tree_pids "$master" | wc -l)
master_rss0=$(proc_rss_kib "$master")
rss0=$(tree_rss_kib "$master")
slab0=$(slab_kib)
m_ms0=$(cpu_ms "$master")

# --- connect --------------------------------------------------------------------------------
t_open=$(now)
IDLE_INFLIGHT=${W10_INFLIGHT:-64} IDLE_SOURCES=$NSRC IDLE_DEADLINE=${W10_DEADLINE:-900} \
    idle_open w10 "$CONNS" "$NLOAD" 10
t_up=$(now)
up_s=$IDLE_UP_S
rss1=$(tree_rss_kib "$master")
slab1=$(slab_kib)
tcpmem1=$(tcp_mem_pages)
mem1=$(mem_available_kib)
ct1=$(conntrack_count)
m_ms1=$(cpu_ms "$master")
master_rss1=$(proc_rss_kib "$master")
read -r gw_conns gw_min gw_max bw0 ngw_seen < <(status_json | gateway_figures)
idle_progress
log "w10: $gw_conns connections on $ngw_seen gateways (min $gw_min, max $gw_max) after $up_s s"

# --- hold: status timings, heartbeat ----------------------------------------------------------
t_hold=$(now)
tree0=$(tree_cpu_ms "$master")
status_ms=() status_json_ms=()
for ((i = 0; i < RUNS; i++)); do
    status_ms+=("$(time_ms "$OURS" status --conf "$CONF")")
    status_json_ms+=("$(time_ms "$OURS" status --json --conf "$CONF")")
done
"$OURS" status --conf "$CONF" >"$OUT/logs/w10-status.txt" 2>&1 || true
left=$(awk -v h="$HOLD" -v a="$t_hold" -v b="$EPOCHREALTIME" 'BEGIN { d = h - (b - a); printf "%.2f", (d > 0 ? d : 0) }')
log "w10: holding ${HOLD} s (status ${status_ms[*]} ms, status --json ${status_json_ms[*]} ms)"
sleep "$left" # the hold: the connections stay idle while the gateways ping them
t_held=$(now)
read -r gw_conns2 _ _ bw1 _ < <(status_json | gateway_figures)
tree1=$(tree_cpu_ms "$master")
m_ms2=$(cpu_ms "$master")
master_rss2=$(proc_rss_kib "$master")
rss2=$(tree_rss_kib "$master")
held_s=$(elapsed "$t_hold" "$t_held")

# --- release ----------------------------------------------------------------------------------
idle_close
t_closed=$(now)
target_stop
deadline=$((SECONDS + 300))
until (($(tcp_inuse) <= tcp0 + 1000)) || ((SECONDS > deadline)); do sleep 0.5; done # poll interval
close_s=$(elapsed "$t_closed" "$(now)")
tcp_end=$(tcp_inuse)
sysctl_restore
kernel_msgs=$(dmesg 2>/dev/null | tail -n +"$((dmesg_from + 1))" | grep -iE 'tcp|conntrack|oom|memory|socket|orphan' | tail -5 | tr '\n' '|' || true)

# --- figures --------------------------------------------------------------------------------
n=$((IDLE_OPENED > 0 ? IDLE_OPENED : 1))
ping_frame=$((${#PING_DATA} + 2)) # websocket text frame from the server: 2-byte header
pings=$(((bw1 - bw0) / ping_frame))
ms_json() { printf '%s\n' "$@" | jq -sc .; }
line=$(jq -nc \
    --argjson conns "$CONNS" --argjson gateways "$NGW" --argjson loaders "$NLOAD" --argjson sources_per_loader "$NSRC" \
    --argjson ping_interval "$PING_INTERVAL" --argjson ping_limit "$PING_LIMIT" --argjson hold "$HOLD" \
    --argjson load1 "$load1" --argjson server_procs "$procs" \
    --argjson opened "$IDLE_OPENED" --argjson failures "$IDLE_FAILURES" --argjson failure_detail "${IDLE_FAILURE_DETAIL:-null}" \
    --argjson up_s "$up_s" --argjson connects_per_s "$(awk -v n="$IDLE_OPENED" -v s="$up_s" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')" \
    --argjson gw_conns "$gw_conns" --argjson gw_min "$gw_min" --argjson gw_max "$gw_max" \
    --argjson rss0 "$rss0" --argjson rss1 "$rss1" --argjson rss2 "$rss2" \
    --argjson user_b "$(((rss1 - rss0) * 1024 / n))" --argjson user_b_held "$(((rss2 - rss0) * 1024 / n))" \
    --argjson slab0 "$slab0" --argjson slab1 "$slab1" --argjson kernel_b "$(((slab1 - slab0) * 1024 / n))" \
    --argjson tcp_mem_pages "${tcpmem1:-0}" --argjson conntrack "$ct1" \
    --argjson mem_avail0 "$mem0" --argjson mem_avail1 "$mem1" --argjson loader_rss "$IDLE_LOADER_RSS_KIB" \
    --argjson master_rss0 "$master_rss0" --argjson master_rss1 "$master_rss1" --argjson master_rss2 "$master_rss2" \
    --argjson master_cpu_connect "$(pct $((m_ms1 - m_ms0)) "$(elapsed "$t_open" "$t_up")")" \
    --argjson master_cpu_hold "$(pct $((m_ms2 - m_ms1)) "$held_s")" \
    --argjson master_cpu_s "$(awk -v t="$m_ms2" 'BEGIN { printf "%.2f", t / 1000 }')" \
    --argjson server_cpu_hold "$(pct $((tree1 - tree0)) "$held_s")" \
    --argjson status_ms "$(ms_json "${status_ms[@]}")" --argjson status_json_ms "$(ms_json "${status_json_ms[@]}")" \
    --argjson held_s "$held_s" --argjson gw_conns_held "${gw_conns2:-0}" --argjson still_open "$IDLE_STILL_OPEN" \
    --argjson closed_while_held "$IDLE_CLOSED" --argjson pings "$pings" \
    --argjson pings_per_s "$(awk -v p="$pings" -v s="$held_s" 'BEGIN { printf "%.0f", (s > 0 ? p / s : 0) }')" \
    --argjson received "$IDLE_RECEIVED" --argjson close_s "$close_s" --argjson tcp_end "$tcp_end" --argjson tcp0 "$tcp0" \
    --arg kernel_msgs "$kernel_msgs" --arg sysctls "${W10_SYSCTL:-}" \
    '{mode: "w10", label: "ours", conns: $conns, gateways: $gateways, loaders: $loaders,
      sources_per_loader: $sources_per_loader, ping_interval_s: $ping_interval, ping_not_response_limit: $ping_limit,
      hold_s: $hold, load1_at_start: $load1, server_procs: $server_procs,
      opened: $opened, failures: $failures, failure_detail: $failure_detail, up_s: $up_s, connects_per_s: $connects_per_s,
      gateway_connections: $gw_conns, gateway_connections_min: $gw_min, gateway_connections_max: $gw_max,
      server_rss_kib_before: $rss0, server_rss_kib_after: $rss1, server_rss_kib_after_hold: $rss2,
      server_bytes_per_conn: $user_b, server_bytes_per_conn_after_hold: $user_b_held,
      kernel_slab_kib_before: $slab0, kernel_slab_kib_after: $slab1, kernel_slab_bytes_per_conn_both_ends: $kernel_b,
      tcp_mem_pages: $tcp_mem_pages, nf_conntrack_count: $conntrack,
      mem_available_kib_before: $mem_avail0, mem_available_kib_after: $mem_avail1, loader_rss_kib: $loader_rss,
      master_rss_kib: [$master_rss0, $master_rss1, $master_rss2], master_cpu_pct_connect: $master_cpu_connect,
      master_cpu_pct_hold: $master_cpu_hold, master_cpu_s_total: $master_cpu_s, server_cpu_pct_hold: $server_cpu_hold,
      status_ms: $status_ms, status_json_ms: $status_json_ms,
      held_s: $held_s, gateway_connections_after_hold: $gw_conns_held, still_open: $still_open,
      closed_while_held: $closed_while_held, pings_sent: $pings, pings_per_s: $pings_per_s, pings_received: $received,
      close_s: $close_s, tcp_inuse_before: $tcp0, tcp_inuse_end: $tcp_end, kernel_messages: $kernel_msgs,
      extra_sysctls: $sysctls}')
file=$OUT/w10-million-$STAMP.jsonl
printf '%s\n' "$line" >>"$file"
echo "$line"
jq -r '"
== W10 (\(.gateways) gateways, \(.loaders) loaders, heartbeat \(.ping_interval_s) s, limit \(.ping_not_response_limit))
connections reached      \(.opened) of \(.conns) (\(.failures) failed \(.failure_detail)), on the gateways \(.gateway_connections) (min \(.gateway_connections_min), max \(.gateway_connections_max) per gateway)
connect rate             \(.connects_per_s)/s (\(.up_s) s)
user space / conn        \(.server_bytes_per_conn) B (after the hold \(.server_bytes_per_conn_after_hold) B; server tree \(.server_rss_kib_after_hold) KiB in \(.server_procs) processes)
kernel slab / conn       \(.kernel_slab_bytes_per_conn_both_ends) B (both ends); tcp mem \(.tcp_mem_pages) pages
loaders RSS              \(.loader_rss_kib) KiB; MemAvailable \(.mem_available_kib_before) -> \(.mem_available_kib_after) KiB
master                   RSS \(.master_rss_kib) KiB, CPU \(.master_cpu_pct_connect) % connecting, \(.master_cpu_pct_hold) % holding
status                   \(.status_ms) ms; --json \(.status_json_ms) ms
held                     \(.still_open) open at the clients, \(.gateway_connections_after_hold) at the gateways after \(.held_s) s; closed while held \(.closed_while_held)
heartbeat                \(.pings_sent) pings sent (\(.pings_per_s)/s), \(.pings_received) received; server tree CPU \(.server_cpu_pct_hold) % while holding
closed                   in \(.close_s) s after the loaders stopped (TCP in use \(.tcp_inuse_before) -> \(.tcp_inuse_end))"' <<<"$line" >&2
