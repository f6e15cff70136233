#!/usr/bin/env bash
# Builds our server at an earlier revision, for old-against-new runs of any workload:
#   bash bench/build-base.sh REV      # prints the binary's path
#   OURS_BASE=$(bash bench/build-base.sh REV) TARGETS="ours-base ours" BASE=ours-base bash bench/w2-closed.sh
# The revision is checked out into bench/out/base-src (a git worktree) and built there with its
# own target directory, so the working tree is left as it is.
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT=${BENCH_OUT:-$BENCH_DIR/out}
rev=${1:?usage: build-base.sh REV}
sha=$(git -C "$ROOT" rev-parse --short "$rev^{commit}")
src=$OUT/base-src
mkdir -p "$OUT"
if [[ -d $src ]]; then
    git -C "$src" checkout --quiet --detach "$sha"
else
    git -C "$ROOT" worktree add --quiet --detach "$src" "$sha"
fi
(cd "$src" && cargo build --release --quiet --bin gatewayworker) >&2
mkdir -p "$OUT/base"
cp "$src/target/release/gatewayworker" "$OUT/base/gatewayworker-$sha"
echo "$OUT/base/gatewayworker-$sha"
