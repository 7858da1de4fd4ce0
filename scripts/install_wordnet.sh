#!/usr/bin/env bash
# Install the WordNet 3.0 database from Debian (idempotent; run as root on Debian/Ubuntu).
#
#   wordnet-base         the dict files (data.*, index.*, *.exc, ...) under /usr/share/wordnet
#                        and the lexnames(5WN) man page
#   wordnet-sense-index  index.sense, which NLTK's WordNet reader also needs
#
# This script only installs the system packages. The NLTK corpus folder (a copy of these files
# plus a generated `lexnames`) is built by the Python side: attacks.resources.prepare_nltk_data().
#
# Usage: sudo bash scripts/install_wordnet.sh
set -euo pipefail

PACKAGES=(wordnet-base wordnet-sense-index)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_wordnet: already installed: ${PACKAGES[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_wordnet: must run as root to install: ${missing[*]} (try: sudo $0)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt does not know the packages yet.
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    apt-get update
fi
apt-get install -y --no-install-recommends "${missing[@]}"

for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || { echo "install_wordnet: $pkg failed to install" >&2; exit 1; }
done
echo "install_wordnet: installed ${missing[*]}"
