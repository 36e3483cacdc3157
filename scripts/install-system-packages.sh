#!/usr/bin/env bash
# System packages the platform's tests need beyond the Python environment, one list
# per feature in scripts/system-packages/*.list (one Debian package per line, `#`
# comments). dcm2niix comes pinned from PyPI (requirements.txt). Installs only what
# is missing; needs root or sudo, and skips with a message where neither is available
# (the tests that need those packages then skip, naming the reason).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mapfile -t packages < <(cat "$here"/system-packages/*.list | sed -e 's/#.*//' -e 's/[[:space:]]//g' | grep -v '^$' | sort -u)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "install-system-packages: not root; skipping ${missing[*]} (the tests that need them skip)" >&2; exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install-system-packages: no apt-get; install ${missing[*]} by hand for the tests that need them" >&2; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-system-packages: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
