#!/usr/bin/env bash
# Headless Chromium for the browser tests (the HTML report, the MLflow UI), from Debian's
# packages: Playwright drives it through executable_path, so no browser is downloaded.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "install-chromium: need root or sudo to apt-get install chromium" >&2
  exit 1
fi
SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
echo "install-chromium: installing Debian's chromium for the browser tests" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
