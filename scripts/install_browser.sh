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
bash "$(dirname "$0")/apt_install.sh" install_browser "${PACKAGES[@]}"

for exe in /usr/bin/chromium /usr/bin/chromedriver; do
    [ -x "$exe" ] || { echo "install_browser: $exe missing after install" >&2; exit 1; }
done
