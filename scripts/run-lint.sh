#!/usr/bin/env bash
# ansible-lint, production profile, over the roles, playbooks and metadata.
# The collection is found through build/collections (a symlink to this
# checkout), so that tasks naming vmbackup.qemu.* modules resolve.
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
VENV=${VENV:-$ROOT/.venv}
mkdir -p build/collections/ansible_collections/vmbackup
ln -sfn "$ROOT" build/collections/ansible_collections/vmbackup/qemu
export ANSIBLE_COLLECTIONS_PATH=$ROOT/build/collections
exec "$VENV/bin/ansible-lint" --nocolor "$@"
