#!/usr/bin/env bash
# W12: pushes from a web backend. The same send_to_all pushes through the HTTP server API
# (POST /api/send_to_all on kept-alive connections) and through the blocking GatewayClient,
# to W12_CLIENTS websocket receivers. Figures: requests (pushes) per second and deliveries
# per second, median over REPS runs, one JSON line per run in bench/out/w12-http-push-STAMP.jsonl.
#
# Knobs: W12_CLIENTS (1000), W12_PUSHERS (4 concurrent pushers), W12_SIZE (32 bytes), REPS (3),
# DURATION (6 s), SERVER_CPU (0) / LOADER_CPU (1), W12_PORT (17300: base of the ports used).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}
STAMP=${STAMP:-$(date +%Y%m%d-%H%M%S)}
CLIENTS=${W12_CLIENTS:-1000}
PUSHERS=${W12_PUSHERS:-4}
SIZE=${W12_SIZE:-32}
REPS=${REPS:-3}
DURATION=${DURATION:-6}
BASE=${W12_PORT:-17300}
pin() { if command -v taskset >/dev/null; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

cd "$ROOT"
cargo build --release --quiet --bin gatewayworker --example http-push
mkdir -p "$OUT"
RUN=$(mktemp -d)
trap 'target/release/gatewayworker stop --conf "$RUN/w12.toml" >/dev/null 2>&1 || true; rm -rf "$RUN"' EXIT
cat > "$RUN/w12.toml" <<CONF
lan_ip = "127.0.0.1"
register_address = "127.0.0.1:$BASE"
run_dir = "$RUN/run"
[register]
listen = "text://127.0.0.1:$BASE"
[[gateway]]
listen = "websocket://127.0.0.1:$((BASE + 1))"
count = 1
start_port = $((BASE + 10))
[worker]
count = 1
app = "echo"
[http]
listen = "http://127.0.0.1:$((BASE + 2))"
CONF
export GW_ENV_FILE=none
ulimit -n 65536 2>/dev/null || true
pin "${SERVER_CPU:-0}" target/release/gatewayworker start -d -q --conf "$RUN/w12.toml"
for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$((BASE + 2))/readyz" >/dev/null && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$((BASE + 2))/readyz" >/dev/null || { echo "W12: the cluster did not get ready" >&2; exit 1; }
FILE="$OUT/w12-http-push-$STAMP.jsonl"
for rep in $(seq "$REPS"); do
    for via in api client; do
        pin "${LOADER_CPU:-1}" target/release/examples/http-push --via "$via" \
            --http "127.0.0.1:$((BASE + 2))" --register "127.0.0.1:$BASE" --ws "127.0.0.1:$((BASE + 1))" \
            --clients "$CLIENTS" --pushers "$PUSHERS" --duration "$DURATION" --size "$SIZE" | tee -a "$FILE"
    done
done
python3 - "$FILE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| via | requests/s | deliveries/s | delivered |")
print("|---|---|---|---|")
for via in ("api", "client"):
    r = [x for x in rows if x["via"] == via]
    med = lambda k: statistics.median(x[k] for x in r)
    print(f"| {via} | {med('requests_per_s'):,.0f} | {med('deliveries_per_s'):,.0f} | {med('delivered_ratio'):.3f} |")
PY
