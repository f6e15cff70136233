#!/usr/bin/env bash
# RFC 6455 conformance: run the Autobahn|Testsuite fuzzing client (cases 1-10) against a
# gateway whose business worker echoes text as text and binary as binary, over ws and wss.
# Needs scripts/autobahn/install.sh once (about a minute; cached in $AUTOBAHN_HOME).
# Exit status 0 when both runs print "N passed, 0 failed".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
cargo build --release --bin gatewayworker --quiet
bin=$root/target/release/gatewayworker
work=$(mktemp -d)
trap 'kill -INT "${server:-}" 2>/dev/null; wait "${server:-}" 2>/dev/null; rm -rf "$work"' EXIT
ws_port=${AUTOBAHN_WS_PORT:-29101}
wss_port=${AUTOBAHN_WSS_PORT:-29102}
reg_port=${AUTOBAHN_REGISTER_PORT:-29100}
limits='[gateway.limits]
max_package_size = 67108864
send_to_client_buffer_size = 134217728
send_to_worker_buffer_size = 134217728'
cat > "$work/autobahn.toml" <<CONF
register_address = "127.0.0.1:$reg_port"
run_dir = "$work/run"
[tls]
cert = "$root/tests/fixtures/test-only-cert.pem"
key = "$root/tests/fixtures/test-only-key.pem"
[register]
listen = "text://127.0.0.1:$reg_port"
[[gateway]]
name = "AutobahnWs"
listen = "websocket://127.0.0.1:$ws_port"
start_port = 29110
$limits
[[gateway]]
name = "AutobahnWss"
listen = "wss://127.0.0.1:$wss_port"
start_port = 29120
$limits
[worker]
name = "AutobahnEcho"
count = 1
app = "echo"
send_to_gateway_buffer_size = 134217728
CONF
(cd "$work" && GW_ENV_FILE=none exec "$bin" start -q --conf "$work/autobahn.toml" >"$work/server.log" 2>&1) &
server=$!
# Wait (poll, 20 s at most) until every process is up; `status` prints nothing until the
# master has written its pid file and stats.
ready=0
for _ in $(seq 1 200); do
  if GW_ENV_FILE=none "$bin" status --json --conf "$work/autobahn.toml" 2>/dev/null \
      | python3 -c 'import json,sys
try: p=json.load(sys.stdin)["processes"]
except ValueError: sys.exit(1)
sys.exit(0 if len(p)>=5 and all(x["state"]=="idle" for x in p) else 1)'; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  echo "autobahn: the server did not come up within 20 s; server log:"
  tail -40 "$work/server.log"
  exit 1
fi
rc=0
AUTOBAHN_AGENT=gatewayworker-ws AUTOBAHN_REPORT="${AUTOBAHN_REPORT_WS:-$work/report-ws}" \
  scripts/autobahn/run.sh "ws://127.0.0.1:$ws_port" || rc=1
AUTOBAHN_AGENT=gatewayworker-wss AUTOBAHN_REPORT="${AUTOBAHN_REPORT_WSS:-$work/report-wss}" \
  scripts/autobahn/run.sh "wss://127.0.0.1:$wss_port" || rc=1
if [ "$rc" != 0 ]; then
  echo "--- server log (last 40 lines) ---"
  tail -40 "$work/server.log"
fi
exit $rc
