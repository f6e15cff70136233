#!/usr/bin/env bash
# W4: connection storm, 10,000 connects with 256 handshakes in flight (kept open until the
# end). Figures: accepts/s, handshake p99, failures.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup
run_matrix "$OUT/w4-storm-$STAMP.jsonl" echo plain \
    storm @URL@ --conns "${W4_CONNECTS:-10000}" --inflight 256 --timeout 20
