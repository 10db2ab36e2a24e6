#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/integration/test_browser.py) when missing.
# Needs root or password-less sudo; otherwise says so and the test skips (or fails under CI=true).
set -euo pipefail
for b in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
  [ -n "$b" ] && command -v "$b" >/dev/null && exit 0
done
if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
  echo "install_chromium: not root and no sudo; install Debian's 'chromium' package for the browser test" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install_chromium: no apt-get here; install Chromium and set \$CHROMIUM for the browser test" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null \
  || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
chromium --version
