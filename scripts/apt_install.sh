#!/usr/bin/env bash
# Install Debian packages idempotently: bash scripts/apt_install.sh LABEL PACKAGE...
# Prints what it did; exits non-zero (with the reason) when not root or a package fails.
set -euo pipefail
label=$1; shift
PACKAGES=("$@")

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "$label: already installed: ${PACKAGES[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "$label: must run as root to install: ${missing[*]} (try: sudo bash $0 $label ${PACKAGES[*]})" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt does not know the packages yet.
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    apt-get update
fi
apt-get install -y --no-install-recommends "${missing[@]}"

for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || { echo "$label: $pkg failed to install" >&2; exit 1; }
done
echo "$label: installed ${missing[*]}"
