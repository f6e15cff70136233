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
    local app=$1 tls=$2 gateways=${GATEWAYS:-1} workers=${WORKERS:-1} run=$OUT/run-ours
    local scheme=websocket
    [[ $tls == tls ]] && scheme=wss
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
start_port = 2300

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
            mkdir -p "$OUT/run-ours"
            ours_config "$app" "$tls" >"$OUT/run-ours/bench.toml"
            taskset -c "$SERVER_CPU" "$bin" start --conf "$OUT/run-ours/bench.toml" >>"$logf" 2>&1 &
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
trap 'target_stop' EXIT

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
