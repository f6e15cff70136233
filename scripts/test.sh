#!/usr/bin/env bash
# The test suite: unit tests, compatibility tests against the GatewayWorker captures,
# integration tests that start the real binary, then the suites that need extra tools when
# they are installed (.ci/run installs them): Autobahn|Testsuite conformance over ws and wss;
# and a short correctness smoke of the W1 and W6 benchmarks (no timing asserted).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The product as shipped: default features only (the tests build with `internals`).
cargo build --quiet --bins
cargo test --quiet -- --test-threads="${GW_TEST_THREADS:-4}"
bench/smoke.sh
if [ -x "${AUTOBAHN_HOME:-$HOME/.cache/autobahn-wstest}/bin/wstest" ]; then
  scripts/autobahn.sh
else
  echo "autobahn: not installed, conformance run skipped (install: scripts/autobahn/install.sh)"
fi
