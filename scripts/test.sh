#!/usr/bin/env bash
# The test suite: unit tests, compatibility tests against the GatewayWorker captures, and
# integration tests that start the real binary. Extra suites run when their tools are
# installed (see .ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo test --quiet -- --test-threads="${GW_TEST_THREADS:-4}"
