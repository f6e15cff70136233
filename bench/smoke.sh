#!/usr/bin/env bash
# Correctness smoke of the benchmark workloads, for CI: a few seconds of W1 (echo at a fixed
# rate: every message back, no error) and of W6 (reload during echo load: nothing lost,
# no connection closed, every business worker replaced). No timing is asserted.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"
cargo build --release --quiet --bin gatewayworker --bin gw-bench
bin=$ROOT/target/release/gatewayworker
loader=$ROOT/target/release/gw-bench
work=$(mktemp -d)
trap 'kill -INT "${server:-}" 2>/dev/null; wait "${server:-}" 2>/dev/null; rm -rf "$work"' EXIT
port=${SMOKE_PORT:-29201}
reg=${SMOKE_REGISTER_PORT:-29200}
cat >"$work/smoke.toml" <<CONF
register_address = "127.0.0.1:$reg"
run_dir = "$work/run"
[register]
listen = "text://127.0.0.1:$reg"
[[gateway]]
listen = "websocket://127.0.0.1:$port"
start_port = 29210
[worker]
count = 2
app = "echo"
CONF
status() { GW_ENV_FILE=none "$bin" status --json --conf "$work/smoke.toml"; }
(cd "$work" && GW_ENV_FILE=none exec "$bin" start -q --conf "$work/smoke.toml" >"$work/server.log" 2>&1) &
server=$!
for _ in $(seq 1 200); do
  if status 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin)["processes"]; sys.exit(0 if len(p)==4 and all(x["state"]=="idle" for x in p) else 1)'; then
    break
  fi
  sleep 0.05 # poll interval
done
fail() { echo "bench smoke: $*"; tail -30 "$work/server.log"; exit 1; }
check() { # FILE: delivered ratio 1.0 and no error
  python3 - "$1" <<'PY' || return 1
import json, sys
d = json.load(open(sys.argv[1]))
ok = d["delivered_ratio"] == 1.0 and d["errors"] == 0 and d["sent"] > 0
print(f"  {d['label']}: sent {d['sent']}, received {d['received']}, errors {d['errors']}, delivered ratio {d['delivered_ratio']}")
sys.exit(0 if ok else 1)
PY
}

echo "bench smoke W1: 50 connections x 100 msg/s, 3 s"
"$loader" echo "ws://127.0.0.1:$port/" --conns 50 --rate 100 --duration 3 --warmup 0 --label w1-smoke \
  --json --quiet >"$work/w1.json" || fail "W1 loader failed"
check "$work/w1.json" || fail "W1: messages lost or errors"

echo "bench smoke W6: reload during 50 connections x 100 msg/s"
workers() { status | python3 -c 'import json,sys; print(" ".join(sorted(str(p["pid"]) for p in json.load(sys.stdin)["processes"] if p["role"]=="worker")))'; }
before=$(workers)
decoded() { status | python3 -c 'import json,sys; print(sum(p["total_request"] for p in json.load(sys.stdin)["processes"] if p["role"]=="gateway"))'; }
start=$(decoded)
"$loader" echo "ws://127.0.0.1:$port/" --conns 50 --rate 100 --duration 6 --warmup 0 --label w6-smoke \
  --json --quiet >"$work/w6.json" &
lpid=$!
# Reload once the load is flowing (5,000 more messages decoded by the gateway).
for _ in $(seq 1 400); do
  (( $(decoded) > start + 5000 )) && break
  sleep 0.02 # poll interval
done
GW_ENV_FILE=none "$bin" reload --conf "$work/smoke.toml" || fail "reload failed"
wait "$lpid" || fail "W6 loader failed"
check "$work/w6.json" || fail "W6: messages lost or connections closed across the reload"
after=$(workers)
for p in $before; do
  [[ " $after " == *" $p "* ]] && fail "W6: business worker $p was not replaced"
done
echo "  business workers $before -> $after"
echo "bench smoke: ok"
