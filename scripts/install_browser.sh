#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian (idempotent; run as root on Debian/Ubuntu).
#
#   chromium          /usr/bin/chromium, the browser the leaderboard browser test drives
#   chromium-driver   /usr/bin/chromedriver, the matching WebDriver (same Debian source package,
#                     so browser and driver versions always agree; selenium never downloads one)
#
# Only tests/test_leaderboard_browser.py needs these; without them that test is skipped.
#
# Usage: sudo bash scripts/install_browser.sh
set -euo pipefail

PACKAGES=(chromium chromium-driver)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install_browser: already installed: ${PACKAGES[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: must run as root to install: ${missing[*]} (try: sudo $0)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt does not know the packages yet.
if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
    apt-get update
fi
apt-get install -y --no-install-recommends "${missing[@]}"

for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || { echo "install_browser: $pkg failed to install" >&2; exit 1; }
done
for exe in /usr/bin/chromium /usr/bin/chromedriver; do
    [ -x "$exe" ] || { echo "install_browser: $exe missing after install" >&2; exit 1; }
done
echo "install_browser: installed ${missing[*]} ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
