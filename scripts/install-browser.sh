#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the browser tests (tests/test_review.py), from the
# distribution's packages: nothing downloads a browser of its own. Does nothing when both are
# there; without root or apt it says what to install, and those tests skip (except under CI).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  echo "installed $(/usr/bin/chromium --version 2>/dev/null | head -1) and its chromedriver"
else
  echo "note: no /usr/bin/chromium and /usr/bin/chromedriver; the browser tests will skip." \
       "Install them with: sudo apt-get install chromium chromium-driver" >&2
fi
