#!/usr/bin/env bash
# Deploy with Ansible (deploy/site.yml), or roll back (deploy/rollback.yml):
#   scripts/deploy.sh [ANSIBLE-PLAYBOOK OPTIONS...]            build once, ship, start or reload
#   scripts/deploy.sh rollback [ANSIBLE-PLAYBOOK OPTIONS...]   previous release, then reload
# The inventory is deploy/inventory.yml unless -i is given (see deploy/inventory.example.yml
# and README.md, "Deploying"). Useful options: -e gw_artifact=PATH (ship a built binary),
# -e gw_update_action=reload, --limit HOST, --ask-vault-pass, --check.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ANSIBLE_CONFIG=${ANSIBLE_CONFIG:-$root/deploy/ansible.cfg}
playbook=$root/deploy/site.yml
if [ "${1:-}" = rollback ]; then
  playbook=$root/deploy/rollback.yml
  shift
fi
command -v ansible-playbook >/dev/null || {
  echo "deploy: ansible-playbook not found (apt-get install ansible-core, or pip install ansible-core)" >&2
  exit 127
}
exec ansible-playbook "$playbook" "$@"
