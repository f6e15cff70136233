#!/usr/bin/env bash
# Control script, as workerman users know it:
#   scripts/start.sh start [-d] | stop [-g] | restart [-d] | reload | upgrade | status [-d] | connections
# Options go through to the binary (--conf FILE; default $GW_CONF, else conf/active.toml if
# it exists, else conf/dev.toml). conf/active.toml is a git-ignored link to this machine's
# conf file (ln -sfn master.toml conf/active.toml; a deploy makes one in each release).
# start, restart, reload and upgrade build the release binary first (incremental, quick when
# nothing changed), so "git pull && scripts/start.sh reload" puts new business code live, and
# "git pull && scripts/start.sh upgrade" new code of every process (master, register, gateways).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${CARGO_TARGET_DIR:-target}/release/gatewayworker
case "${1:-}" in
  start|restart|reload|upgrade) cargo build --release --bin gatewayworker --quiet ;;
  *) [ -x "$bin" ] || cargo build --release --bin gatewayworker --quiet ;;
esac
exec "$bin" "$@"
