#!/usr/bin/env bash
# Shared functions of the benchmark scripts (see bench/README.md). Sourced, not run.
#
# Environment knobs (all optional):
#   TARGETS="fastws node ours"  targets, in the order they alternate; `ours-base` is our
#                               server from the binary OURS_BASE (an earlier build, see
#                               bench/build-base.sh), for old-against-new runs
#   REPS=3                      repetitions of every workload per target
#   BASE=fastws                 the target that ratios are computed against
#   SERVER_CPU=0 LOADER_CPU=1   CPUs the server tree and the loader are pinned to
#   DURATION=6 WARMUP=1         measured window and warm-up of the load runs, seconds
#   BENCH_OUT=bench/out         where raw JSON lines, logs and run directories go
#   OURS_RUN=$BENCH_OUT/run-ours our server's run directory (config, pid file, statistics)
#   START_PORT=2300             first port of our gateways' inner listeners (one per gateway)
#   PING_INTERVAL PING_LIMIT PING_DATA  our gateways' heartbeat (ping_interval,
#                               ping_not_response_limit, ping_data); none when unset
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
LOADER=$ROOT/target/release/gw-bench
FASTWS=$BENCH_DIR/peers/fastws/target/release/fastws-peer
NODE_PEER=$BENCH_DIR/peers/node/server.js
OURS=$ROOT/target/release/gatewayworker
OURS_BASE=${OURS_BASE:-}
TARGETS=${TARGETS:-fastws node ours}
REPS=${REPS:-3}
BASE=${BASE:-fastws}
SERVER_CPU=${SERVER_CPU:-0}
LOADER_CPU=${LOADER_CPU:-1}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-1}
PORT_FASTWS=${PORT_FASTWS:-9101}
PORT_NODE=${PORT_NODE:-9102}
PORT_OURS=${PORT_OURS:-7272}
PORT_REGISTER=${PORT_REGISTER:-1236}
START_PORT=${START_PORT:-2300}
OURS_RUN=${OURS_RUN:-$OUT/run-ours}
STAMP=${STAMP:-$(date +%Y%m%d-%H%M%S)}

# Set by target_start.
TARGET_PID=""
TARGET_URL=""
TARGET_NAME=""

log() { printf '%s\n' "$*" >&2; }

# Builds the loader (and our server when it is a target), installs the peers, makes the TLS
# test certificate. Call once at the start of every script.
bench_setup() {
    mkdir -p "$OUT/logs"
    (cd "$ROOT" && cargo build --release --quiet --bin gw-bench)
    if [[ " $TARGETS " == *" ours "* ]]; then
        (cd "$ROOT" && cargo build --release --quiet --bin gatewayworker) || log "bench: building gatewayworker failed"
    fi
    if [[ " $TARGETS " == *" fastws "* || " $TARGETS " == *" node "* ]]; then
        bash "$BENCH_DIR/peers/install.sh"
    fi
    tls_cert
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    log "bench: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), targets: $TARGETS, reps: $REPS"
}

# A self-signed certificate for wss runs, made once.
tls_cert() {
    TLS_CERT=$OUT/tls/cert.pem
    TLS_KEY=$OUT/tls/key.pem
    [[ -f $TLS_CERT && -f $TLS_KEY ]] && return 0
    mkdir -p "$OUT/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -keyout "$TLS_KEY" -out "$TLS_CERT" -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
}

# All descendants of PID and PID itself, one per line.
tree_pids() {
    local root=$1
    ps -e -o pid=,ppid= | awk -v root="$root" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            keep[root] = 1; print root; changed = 1
            while (changed) {
                changed = 0
                for (i in pids) { p = pids[i]; if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; print p; changed = 1 } }
            }
        }'
}

# Counters of the whole tree of PID, from /proc: "utime_ticks stime_ticks ctx_switches".
tree_counters() {
    local p f u=0 s=0 c=0 v
    for p in $(tree_pids "$1"); do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }
        set -- $f
        u=$((u + ${12})) s=$((s + ${13}))
        v=$(awk '/ctxt_switches:/ { n += $2 } END { print n + 0 }' "/proc/$p/status" 2>/dev/null)
        c=$((c + ${v:-0}))
    done
    echo "$u $s $c"
}

# Resident set size of the tree of PID in KiB.
tree_rss_kib() {
    local total=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

slab_kib() { awk '/^Slab:/ { print $2 }' /proc/meminfo; }

# The loader pinned to its CPU.
loader() { taskset -c "$LOADER_CPU" "$LOADER" "$@"; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Polls the target with a probe until it answers (deadline 30 s) or its process is gone.
wait_ready() {
    local url=$1 pid=$2; shift 2
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || { log "bench: $TARGET_NAME exited during start (see $OUT/logs/$TARGET_NAME.log)"; return 1; }
        if "$LOADER" probe "$url" --timeout 1 --quiet "$@"; then
            return 0
        fi
        sleep 0.1 # poll interval
    done
    log "bench: $TARGET_NAME did not answer on $url within 30 s"
    return 1
}

# Writes the config of our server for APP (echo | broadcast) to stdout.
ours_config() {
    local app=$1 tls=$2 gateways=${GATEWAYS:-1} workers=${WORKERS:-1} run=$OURS_RUN
    local scheme=websocket heartbeat=""
    [[ $tls == tls ]] && scheme=wss
    if [[ -n ${PING_INTERVAL:-} ]]; then
        heartbeat=$(printf "ping_interval = %s\nping_not_response_limit = %s\nping_data = '%s'" \
            "$PING_INTERVAL" "${PING_LIMIT:-0}" "${PING_DATA:-}")
    fi
    cat <<TOML
machine_type = "all"
lan_ip = "127.0.0.1"
register_address = "127.0.0.1:$PORT_REGISTER"
run_dir = "$run"

[register]
listen = "text://127.0.0.1:$PORT_REGISTER"

[[gateway]]
name = "BenchGateway"
listen = "$scheme://127.0.0.1:$PORT_OURS"
count = $gateways
start_port = $START_PORT
$heartbeat

[gateway.limits]
max_connections = ${MAX_CONNECTIONS:-20000}

[worker]
name = "BenchWorker"
count = $workers
app = "$app"
TOML
    if [[ $tls == tls ]]; then
        printf '\n[tls]\ncert = "%s"\nkey = "%s"\n' "$TLS_CERT" "$TLS_KEY"
    fi
}

# target_start NAME APP [tls]: starts fastws | node | ours serving APP (echo | broadcast),
# pinned to SERVER_CPU, and waits until it answers. Sets TARGET_PID and TARGET_URL.
target_start() {
    local name=$1 app=$2 tls=${3:-plain} port scheme=ws probe_args=()
    TARGET_NAME=$name
    [[ $tls == tls ]] && { scheme=wss; probe_args+=(--insecure); }
    local tls_args=()
    [[ $tls == tls ]] && tls_args=(--tls "$TLS_CERT" "$TLS_KEY")
    local logf=$OUT/logs/$name.log
    case $name in
        fastws) port=$PORT_FASTWS ;;
        node) port=$PORT_NODE ;;
        ours | ours-base) port=$PORT_OURS ;;
        *) log "bench: unknown target $name"; return 1 ;;
    esac
    if port_busy "$port"; then
        log "bench: port $port is already in use; is an old server still running?"
        return 1
    fi
    case $name in
        fastws)
            taskset -c "$SERVER_CPU" "$FASTWS" "$app" "127.0.0.1:$port" "${tls_args[@]}" >>"$logf" 2>&1 &
            ;;
        node)
            taskset -c "$SERVER_CPU" node "$NODE_PEER" "$app" "127.0.0.1:$port" "${tls_args[@]}" >>"$logf" 2>&1 &
            ;;
        ours | ours-base)
            local bin=$OURS
            [[ $name == ours-base ]] && bin=$OURS_BASE
            [[ -n $bin && -x $bin ]] || { log "bench: $name: binary '$bin' is not built (OURS_BASE for ours-base)"; return 1; }
            mkdir -p "$OURS_RUN"
            ours_config "$app" "$tls" >"$OURS_RUN/bench.toml"
            taskset -c "$SERVER_CPU" "$bin" start --conf "$OURS_RUN/bench.toml" >>"$logf" 2>&1 &
            ;;
    esac
    TARGET_PID=$!
    TARGET_URL=$scheme://127.0.0.1:$port/
    # The peers' broadcast does not return a message to its sender: the handshake must do.
    [[ $app == broadcast && $name != ours* ]] && probe_args+=(--no-echo)
    if ! wait_ready "$TARGET_URL" "$TARGET_PID" "${probe_args[@]}"; then
        target_stop
        return 1
    fi
    local p
    for p in $(tree_pids "$TARGET_PID"); do
        taskset -a -cp "$SERVER_CPU" "$p" >/dev/null 2>&1 || true
    done
}

# Stops the running target (SIGINT for ours, SIGTERM for the peers), its whole tree.
target_stop() {
    [[ -n $TARGET_PID ]] || return 0
    local pids sig=TERM
    pids=$(tree_pids "$TARGET_PID")
    [[ $TARGET_NAME == ours* ]] && sig=INT
    kill -"$sig" "$TARGET_PID" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$TARGET_PID" 2>/dev/null && ((SECONDS < deadline)); do
        sleep 0.05 # poll interval
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    wait "$TARGET_PID" 2>/dev/null || true
    TARGET_PID=""
}

# Loader processes of an idle run (idle_open), stopped by idle_close or at exit.
IDLE_PIDS=()
IDLE_TAG=""

# idle_open TAG CONNS LOADERS [FIRST]: the target is running; opens CONNS connections to
# TARGET_URL with LOADERS `gw-bench idle` processes on LOADER_CPU, loader i binding its sockets
# round-robin to 127.0.(FIRST+i).1 to 127.0.(FIRST+i).IDLE_SOURCES (FIRST 10, IDLE_SOURCES 2:
# one source address gives about 28k ports per destination). Returns once every loader has
# written its ready file (its connections are up or failed) or exited, at most IDLE_DEADLINE
# (180) s; calls idle_progress, if the script defines it, every 10 s meanwhile. Sets IDLE_UP_S: seconds from the start of the first loader to the last ready file.
# Knobs: IDLE_INFLIGHT (256 handshakes in flight per loader), IDLE_TIMEOUT (30 s per connect).
# shellcheck disable=SC2034 # IDLE_* are read by the scripts
idle_open() {
    local tag=$1 conns=$2 loaders=$3 first=${4:-10} i p
    local per=$(((conns + loaders - 1) / loaders))
    IDLE_TAG=$tag
    IDLE_PIDS=()
    rm -f "$OUT/$tag-ready."* "$OUT/$tag-loader."*.json
    local t0=$EPOCHREALTIME
    for ((i = 0; i < loaders; i++)); do
        taskset -c "$LOADER_CPU" "$LOADER" idle "$TARGET_URL" --conns "$per" \
            --inflight "${IDLE_INFLIGHT:-256}" --timeout "${IDLE_TIMEOUT:-30}" \
            --sources "127.0.$((first + i)).1-127.0.$((first + i)).${IDLE_SOURCES:-2}" \
            --ready-file "$OUT/$tag-ready.$i" --json --quiet >"$OUT/$tag-loader.$i.json" &
        IDLE_PIDS+=($!)
    done
    local deadline=$((SECONDS + ${IDLE_DEADLINE:-180})) ready alive next=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        if ((SECONDS >= next)) && declare -F idle_progress >/dev/null; then
            idle_progress
            next=$((SECONDS + 10))
        fi
        ready=0 alive=0
        for ((i = 0; i < loaders; i++)); do
            if [[ -f $OUT/$tag-ready.$i ]]; then ready=$((ready + 1)); fi
        done
        ((ready == loaders)) && break
        for p in "${IDLE_PIDS[@]}"; do
            if kill -0 "$p" 2>/dev/null; then alive=$((alive + 1)); fi
        done
        ((alive + ready >= loaders)) || break
        sleep 0.2 # poll interval
    done
    IDLE_UP_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
}

# idle_close: stops the loaders of idle_open (SIGTERM: each writes its JSON line and exits,
# which closes its connections) and sums their figures: IDLE_OPENED, IDLE_FAILURES,
# IDLE_STILL_OPEN, IDLE_CLOSED (closed while held), IDLE_RECEIVED (messages from the server
# while held), IDLE_LOADER_RSS_KIB; IDLE_FAILURE_DETAIL is the merged failure_detail (needs jq).
# shellcheck disable=SC2034 # IDLE_* are read by the scripts
idle_close() {
    ((${#IDLE_PIDS[@]})) || return 0
    kill -TERM "${IDLE_PIDS[@]}" 2>/dev/null || true
    wait "${IDLE_PIDS[@]}" 2>/dev/null || true
    IDLE_PIDS=()
    local files=("$OUT/$IDLE_TAG-loader."*.json)
    IDLE_OPENED=$(idle_sum opened "${files[@]}")
    IDLE_FAILURES=$(idle_sum failures "${files[@]}")
    IDLE_STILL_OPEN=$(idle_sum still_open "${files[@]}")
    IDLE_CLOSED=$(idle_sum closed_while_held "${files[@]}")
    IDLE_RECEIVED=$(idle_sum messages_received "${files[@]}")
    IDLE_LOADER_RSS_KIB=$(idle_sum loader_rss_kib "${files[@]}")
    IDLE_FAILURE_DETAIL=null
    if command -v jq >/dev/null; then
        IDLE_FAILURE_DETAIL=$(cat "${files[@]}" | jq -sc '[.[].failure_detail // {} | to_entries[]]
            | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)})
            | map(select(.value != 0)) | from_entries' 2>/dev/null) || IDLE_FAILURE_DETAIL=null
    fi
}

# idle_sum FIELD FILE...: the sum of the integer FIELD of the loaders' JSON lines.
idle_sum() {
    local field=$1
    shift
    cat "$@" 2>/dev/null | grep -o "\"$field\":[0-9]*" | awk -F: '{ n += $2 } END { print n + 0 }'
}

bench_cleanup() {
    if ((${#IDLE_PIDS[@]})); then kill -TERM "${IDLE_PIDS[@]}" 2>/dev/null || true; fi
    target_stop
}
trap 'bench_cleanup' EXIT

# One compact line per run on stderr.
show() {
    if command -v jq >/dev/null; then
        jq -c '{label: .label, rep: .rep} + (with_entries(select(.key | test("^(msgs_per_s|deliveries_per_s|accepts_per_s|delivered_ratio|errors|failures|server_cpu_us_per_(msg|delivery|accept)|server_cpu_pct|loader_cpu_pct)$")))) + (if .lat_us then {p50: .lat_us.p50, p99: .lat_us.p99} else {} end) + (if .handshake_us then {hs_p99: .handshake_us.p99} else {} end)' <<<"$1" >&2 || log "${1:0:400}"
    else
        log "${1:0:400}"
    fi
}

# run_matrix FILE APP TLS LOADER-ARGS...: for REPS repetitions, runs the loader against each
# target in turn (alternation), @URL@ in the arguments being the target's URL; appends the
# JSON lines to FILE and prints the medians and ratios to BASE.
run_matrix() {
    local file=$1 app=$2 tls=$3 rep t a line
    shift 3
    local extra=()
    [[ $tls == tls ]] && extra+=(--insecure)
    for rep in $(seq 1 "$REPS"); do
        for t in $TARGETS; do
            if ! target_start "$t" "$app" "$tls"; then
                log "bench: $t skipped (rep $rep)"
                continue
            fi
            local args=()
            for a in "$@"; do args+=("${a//@URL@/$TARGET_URL}"); done
            if line=$(loader "${args[@]}" "${extra[@]}" --label "$t" --rep "$rep" --server-pid "$TARGET_PID" --json --quiet); then
                printf '%s\n' "$line" >>"$file"
                show "$line"
            else
                log "bench: loader failed against $t (rep $rep)"
            fi
            target_stop
        done
    done
    summarize "$file"
}

summarize() {
    local file=$1
    [[ -s $file ]] || { log "bench: no results in $file"; return 0; }
    echo
    echo "== $(basename "$file" .jsonl)  ($file)"
    "$LOADER" summary "$file" --base "$BASE" "${@:2}"
}
