#!/usr/bin/env bash
# Make sure the browser tests have a real headless browser: Debian's chromium and its
# chromedriver (no browser that downloads its own build). Installs them when missing (as root);
# says what to do otherwise. In CI the browser tests fail, not skip, without them.
set -euo pipefail

log() { printf 'browser: %s\n' "$*" >&2; }

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  log "chromium and chromium-driver are missing: run 'sudo apt-get install chromium chromium-driver'"
  log "(the browser tests skip without them, and fail when CI=true)"
  exit 0
fi
log "installing chromium and chromium-driver from Debian packages"
DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
