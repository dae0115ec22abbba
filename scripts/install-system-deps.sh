#!/usr/bin/env bash
# Install the Debian packages given as arguments, only those missing, so a
# second run does not touch apt at all. Used by .ci/run and `make demo`.
# Default: what the tests and the demo need on the hypervisor side.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=("$@")
if ((${#packages[@]} == 0)); then
    packages=(qemu-system-x86 qemu-utils)
fi

missing=()
for pkg in "${packages[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
    echo "already installed: ${packages[*]}"
    exit 0
fi
if ((EUID != 0)); then
    echo "missing Debian packages: ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
# Wait for a boot-time apt/unattended-upgrades run instead of failing on the lock.
apt_opts=(-q -y -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0)
apt-get "${apt_opts[@]}" update
apt-get "${apt_opts[@]}" install "${missing[@]}"
