#!/usr/bin/env bash
# W13: send_to_uid fan-out. One machine (machine_type all): W13_GATEWAYS (8) websocket gateway
# processes, one business worker (app probe), the register. W13_CLIENTS (64) websocket clients,
# spread over the gateways by the kernel, each bind their own uid; then sends of one uid each,
# round robin, at W13_RATE (1000) per second for DURATION (6) s after WARMUP (1) s, through the
# business worker (a client's probe request per send) and through a GatewayClient (W13_VIA).
# Figures per send: packets received by the gateways (status total_request), CPU of the
# gateways, of the worker and of the whole server (scheduler runtime), and the deliveries.
# The server is pinned to SERVER_CPU, the instrument (examples/fanout-push) to LOADER_CPU.
#
# Old against new (the default targets are "ours-base ours", alternating per repetition):
#   OURS_BASE=$(bash bench/build-base.sh REV) bash bench/w13-fanout.sh
# One JSON line per run in bench/out/w13-fanout-STAMP.jsonl; the medians and the ratios to
# ours-base at the end. Knobs: TARGETS, REPS (3), W13_PORT (17400: base of the ports used).
export TARGETS=${TARGETS:-ours-base ours}
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
GATEWAYS=${W13_GATEWAYS:-8}
CLIENTS=${W13_CLIENTS:-64}
RATE=${W13_RATE:-1000}
VIAS=${W13_VIA:-worker client}
PORT=${W13_PORT:-17400}
bench_setup
(cd "$ROOT" && cargo build --release --quiet --example fanout-push)
PUSH=$ROOT/target/release/examples/fanout-push
RUN=$OUT/run-w13
CONF=$RUN/w13.toml
file=$OUT/w13-fanout-$STAMP.jsonl

w13_config() {
    cat <<TOML
machine_type = "all"
lan_ip = "127.0.0.1"
register_address = "127.0.0.1:$PORT"
run_dir = "$RUN/run"

[register]
listen = "text://127.0.0.1:$PORT"

[[gateway]]
name = "FanoutGateway"
listen = "websocket://127.0.0.1:$((PORT + 1))"
count = $GATEWAYS
start_port = $((PORT + 10))

[worker]
name = "FanoutWorker"
count = 1
app = "probe"
TOML
}

# w13_start NAME: our server (ours | ours-base) pinned to SERVER_CPU, started in the
# foreground (TARGET_PID is its master), ready when status lists every process idle.
w13_start() {
    local name=$1 bin=$OURS
    [[ $name == ours-base ]] && bin=$OURS_BASE
    [[ -n $bin && -x $bin ]] || { log "w13: $name: binary '$bin' is not built (OURS_BASE for ours-base)"; return 1; }
    TARGET_NAME=$name
    TARGET_BIN=$bin
    rm -rf "$RUN" && mkdir -p "$RUN"
    w13_config >"$CONF"
    GW_ENV_FILE=none taskset -c "$SERVER_CPU" "$bin" start --conf "$CONF" >>"$OUT/logs/w13-$name.log" 2>&1 &
    TARGET_PID=$!
    local want=$((GATEWAYS + 2)) deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        kill -0 "$TARGET_PID" 2>/dev/null || { log "w13: $name exited during start"; return 1; }
        if GW_ENV_FILE=none "$bin" status --json --conf "$CONF" 2>/dev/null | python3 -c '
import json, sys
rows = [p for p in json.load(sys.stdin)["processes"] if p["role"] in ("register", "gateway", "worker")]
sys.exit(0 if len(rows) == int(sys.argv[1]) and all(p["state"] == "idle" for p in rows) else 1)' "$want" 2>/dev/null; then
            local p
            for p in $(tree_pids "$TARGET_PID"); do taskset -a -cp "$SERVER_CPU" "$p" >/dev/null 2>&1 || true; done
            return 0
        fi
        sleep 0.1 # poll interval
    done
    log "w13: $name did not get ready within 30 s"
    return 1
}

log "w13: $(uptime)"
for rep in $(seq 1 "$REPS"); do
    for t in $TARGETS; do
        if ! w13_start "$t"; then
            target_stop
            continue
        fi
        for via in $VIAS; do
            if line=$(taskset -c "$LOADER_CPU" "$PUSH" --via "$via" --label "$t" --rep "$rep" \
                --bin "$TARGET_BIN" --conf "$CONF" --ws "127.0.0.1:$((PORT + 1))" --register "127.0.0.1:$PORT" \
                --clients "$CLIENTS" --rate "$RATE" --warmup "$WARMUP" --duration "$DURATION"); then
                printf '%s\n' "$line" >>"$file"
                log "$line"
            else
                log "w13: the instrument failed against $t via $via (rep $rep)"
            fi
        done
        target_stop
    done
done
log "w13: $(uptime)"
python3 - "$file" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda xs: statistics.median(xs) if xs else float("nan")
keys = ["gateway_packets_per_send", "gateway_cpu_us_per_send", "worker_cpu_us_per_send", "server_cpu_us_per_send"]
print(f"\n== w13-fanout ({sys.argv[1]}), median of {max(r['rep'] for r in rows)} runs")
print("| via | target | gateways | packets to gateways / send | gateway CPU µs / send | worker CPU µs / send | server CPU µs / send | delivered |")
print("|---|---|---|---|---|---|---|---|")
for via in dict.fromkeys(r["via"] for r in rows):
    for label in dict.fromkeys(r["label"] for r in rows):
        rs = [r for r in rows if r["via"] == via and r["label"] == label]
        if not rs:
            continue
        cells = " | ".join(f"{med([r[k] for r in rs]):.2f}" for k in keys)
        print(f"| {via} | {label} | {rs[0]['gateways']} | {cells} | {min(r['delivered_ratio'] for r in rs):.3f} |")
    base = {r["rep"]: r for r in rows if r["via"] == via and r["label"] == "ours-base"}
    new = {r["rep"]: r for r in rows if r["via"] == via and r["label"] == "ours"}
    reps = sorted(set(base) & set(new))
    if reps:
        ratios = " | ".join(f"{med([new[p][k] / base[p][k] for p in reps if base[p][k]]):.2f}" for k in keys)
        print(f"| {via} | ours / ours-base | | {ratios} | |")
PY
