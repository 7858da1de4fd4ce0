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
bash "$(dirname "$0")/apt_install.sh" install_wordnet "${PACKAGES[@]}"
