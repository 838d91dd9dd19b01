#!/bin/sh
# Make Debian's headless Chromium available for the browser test (tests/test_serve_browser.py).
# Installs chromium + chromium-driver with apt-get only when /usr/bin/chromium is missing.
# Never fails the build: it always exits 0 and says why when it cannot install (the test then skips).
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM missing and apt-get not available; the browser test will be skipped"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure_chromium: $CHROMIUM missing and not root (no passwordless sudo); the browser test will be skipped"
        exit 0
    fi
fi
echo "ensure_chromium: installing chromium and chromium-driver with apt-get (one-off, a few minutes)"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq >/dev/null 2>&1; then
    echo "ensure_chromium: apt-get update failed (offline?); the browser test will be skipped"
    exit 0
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1; then
    echo "ensure_chromium: apt-get install chromium chromium-driver failed; the browser test will be skipped"
    exit 0
fi
if [ -x "$CHROMIUM" ]; then
    echo "ensure_chromium: installed $($CHROMIUM --version 2>/dev/null)"
else
    echo "ensure_chromium: install finished but $CHROMIUM is still missing; the browser test will be skipped"
fi
exit 0
