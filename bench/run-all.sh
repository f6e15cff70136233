#!/usr/bin/env bash
# Every workload in turn (W1, W2, W3, W4, W5, W7, W8; W6 needs `reload` and lives with the
# operations tests). About 15-20 minutes on a 2-core machine with the three targets.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export STAMP=${STAMP:-$(date +%Y%m%d-%H%M%S)}
export W3_DURATION=${W3_DURATION:-4}
for w in w1-echo w2-closed w3-broadcast w4-storm w5-idle w7-syscalls w8-tls; do
    echo "#### $w"
    bash "$here/$w.sh"
done
