#!/usr/bin/env bash
# Builds / installs the reference peers of the benchmarks. Idempotent and quick when done:
#   bench/peers/fastws: release build of the fastwebsockets peer (crates.io)
#   bench/peers/node:   `npm ci` of the ws peer (npm registry)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

command -v cargo >/dev/null || { echo "install.sh: cargo is needed for the fastws peer" >&2; exit 1; }
(cd "$here/fastws" && cargo build --release --quiet)

command -v node >/dev/null && command -v npm >/dev/null || {
    echo "install.sh: node and npm are needed for the node peer (apt-get install nodejs npm)" >&2
    exit 1
}
if [ ! -f "$here/node/node_modules/ws/package.json" ] \
    || [ "$here/node/package-lock.json" -nt "$here/node/node_modules/.package-lock.json" ]; then
    (cd "$here/node" && npm ci --no-audit --no-fund --silent)
fi
