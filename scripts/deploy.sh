#!/usr/bin/env bash
# Deploy with Ansible (deploy/site.yml), or roll back (deploy/rollback.yml):
#   scripts/deploy.sh [ANSIBLE-PLAYBOOK OPTIONS...]            build once, ship, start or reload
#   scripts/deploy.sh rollback [ANSIBLE-PLAYBOOK OPTIONS...]   previous release, then reload
# The inventory is deploy/inventory.yml unless -i is given (see deploy/inventory.example.yml
# and README.md, "Deploying"). Useful options: -e gw_artifact=PATH (ship a built binary),
# -e gw_update_action=reload, --limit HOST, --ask-vault-pass.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ANSIBLE_CONFIG=${ANSIBLE_CONFIG:-$root/deploy/ansible.cfg}
playbook=$root/deploy/site.yml
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
if [ "${1:-}" = rollback ]; then
  playbook=$root/deploy/rollback.yml
  shift
fi
case " $* " in
  *" -i "*|*" --inventory "*|*" --inventory="*|*" -i"*) ;;
  *) [ -f "$root/deploy/inventory.yml" ] || {
       echo "deploy: no inventory: copy deploy/inventory.example.yml to deploy/inventory.yml, or pass -i FILE" >&2
       exit 64
     } ;;
esac
command -v ansible-playbook >/dev/null || {
  echo "deploy: ansible-playbook not found (apt-get install ansible-core, or pip install ansible-core)" >&2
  exit 127
}
exec ansible-playbook "$playbook" "$@"
