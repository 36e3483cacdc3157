#!/usr/bin/env bash
# System packages the platform's tests need beyond the Python environment:
# SLURM (slurmctld, slurmd, munge) for the real-cluster test. dcm2niix comes pinned
# from PyPI (requirements.txt). Installs only what is missing; needs root or sudo,
# and skips with a message where neither is available (the SLURM test then skips).
set -euo pipefail
packages=(slurm-wlm munge)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "install-system-packages: not root; skipping ${missing[*]} (SLURM tests will skip)" >&2; exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-system-packages: no apt-get; install ${missing[*]} by hand for the SLURM tests" >&2; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
