#!/usr/bin/env bash
# W2: echo closed loop, 50 connections with one message in flight each. Figures: msgs/s,
# server CPU %, loader CPU % (a loader near 100 % means "loader-bound").
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_setup
run_matrix "$OUT/w2-closed-$STAMP.jsonl" echo plain \
    echo @URL@ --conns 50 --closed --size 32 --duration "$DURATION" --warmup "$WARMUP"
