#!/usr/bin/env bash
# Debian's chromium and chromium-driver, for the console's browser tests (Playwright from PyPI drives
# /usr/bin/chromium; Playwright's own browser download cannot work here). Idempotent: does nothing
# when both are installed; stops nothing.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "browser: chromium and chromedriver present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
for attempt in 1 2 3 4 5; do
    if $SUDO apt-get install -y -q chromium chromium-driver; then
        break
    fi
    # stale or missing package lists, or another install holding the dpkg lock: refresh, wait, retry
    $SUDO apt-get update -q || true
    sleep $((attempt * 10))
done
if ! command -v chromium >/dev/null 2>&1; then
    echo "browser: chromium could not be installed (apt-get install chromium chromium-driver)" >&2
    exit 1
fi
echo "browser: chromium installed"
