#!/usr/bin/env bash
# Deploy a revision to every host of a stage of conf/deploy.toml, over ssh:
#   scripts/deploy.sh [--dry-run] [--rev REV] [--file FILE] <stage>
# For each host, master machines first, then worker machines, one ssh call per step:
#   update  git fetch <remote> and check out the revision (detached); untracked and ignored
#           files such as the host's .env are left alone
#   build   the stage's build command (default: cargo build --release --bin gatewayworker)
#   conf    link the host's conf file as conf/active.toml (the binary's default conf)
#   start   scripts/start.sh reload when it runs (clients stay connected), else start -d
# The revision is REV resolved in this repository (default HEAD); it must have been pushed
# where the hosts fetch from. Stops at the first failing step, naming the host, the step and
# the hosts not yet deployed. --dry-run prints every ssh command instead of running it.
# GW_DEPLOY_SSH is the ssh command with its options (default: ssh -o BatchMode=yes).
# Note: reload restarts business workers only; a change to the gateway or register code, or
# to a conf file, needs "scripts/start.sh restart" on the master machines (clients reconnect).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { echo "usage: scripts/deploy.sh [--dry-run] [--rev REV] [--file FILE] <stage>" >&2; exit 64; }
dry=0 rev=HEAD file=conf/deploy.toml stage=
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|-n) dry=1 ;;
    --rev) [ $# -ge 2 ] || usage; rev=$2; shift ;;
    --rev=*) rev=${1#--rev=} ;;
    --file) [ $# -ge 2 ] || usage; file=$2; shift ;;
    --file=*) file=${1#--file=} ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) usage ;;
    *) [ -z "$stage" ] || usage; stage=$1 ;;
  esac
  shift
done
[ -n "$stage" ] || usage

sha=$(git rev-parse --verify --quiet "$rev^{commit}") || { echo "deploy: unknown revision $rev" >&2; exit 1; }
# The plan comes from the binary (it parses and checks the TOML); GW_BIN: a built binary.
bin=${GW_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --bin gatewayworker --quiet
  bin=${CARGO_TARGET_DIR:-target}/release/gatewayworker
fi
plan=$("$bin" deploy-plan --file "$file" "$stage") || exit 1

remote= build= hosts=()
while IFS=$'\t' read -r kind a rest; do
  case "$kind" in
    remote) remote=$a ;;
    build) build=$a ;;
    host) hosts+=("$a	$rest") ;;
  esac
done <<< "$plan"
read -r -a ssh <<< "${GW_DEPLOY_SSH:-ssh -o BatchMode=yes}"

# Single-quoted, for display.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

names=()
for h in "${hosts[@]}"; do names+=("${h%%	*}"); done
echo "deploy $stage: revision $sha ($rev) to ${#hosts[@]} hosts: ${names[*]}"

done_hosts=()
for i in "${!hosts[@]}"; do
  IFS=$'\t' read -r name addr port type conf path link <<< "${hosts[$i]}"
  target=("${ssh[@]}")
  [ "$port" = - ] || target+=(-p "$port")
  target+=("$addr")
  # Names and paths are plain shell words (deploy-plan checks them): no quoting needed.
  cd_path="cd $path && export PATH=\"\$HOME/.cargo/bin:\$PATH\""
  steps=(
    "update|$cd_path && git fetch --quiet $remote && git checkout --quiet --detach $sha"
    "build|$cd_path && $build"
    "conf|$cd_path && test -f $conf && ln -sfn $link conf/active.toml"
    "start|$cd_path && if scripts/start.sh status >/dev/null 2>&1; then scripts/start.sh reload; else scripts/start.sh start -d -q; fi"
  )
  echo "== $name ($type, $addr:$path, conf $conf)"
  for s in "${steps[@]}"; do
    step=${s%%|*} cmd=${s#*|}
    if [ "$dry" = 1 ]; then
      echo "[$name] $step: ${target[*]} $(q "$cmd")"
      continue
    fi
    echo "[$name] $step"
    code=0
    "${target[@]}" "$cmd" </dev/null || code=$?
    if [ "$code" != 0 ]; then
      rest_hosts=("${names[@]:$i}")
      {
        echo "deploy: host $name (step $step) failed (exit $code)"
        [ "$step" != update ] || echo "deploy: is revision $sha pushed to $remote, and the clone at $path clean?"
        echo "deploy: hosts deployed: ${done_hosts[*]:-none}"
        echo "deploy: hosts not yet deployed: ${rest_hosts[*]}"
      } >&2
      exit 1
    fi
  done
  done_hosts+=("$name")
done
if [ "$dry" = 1 ]; then
  echo "dry run: nothing done"
else
  echo "deploy $stage: revision $sha live on ${names[*]}"
fi
