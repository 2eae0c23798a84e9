#!/bin/sh
# Install headless Chromium from Debian's packages for the browser test, where it is missing.
# Needs root or password-less sudo; otherwise it says so and the browser test is skipped with
# that reason. Safe to run every time: does nothing when Chromium is already installed.
set -eu

for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root="sudo -n"
else
    echo "ensure_chromium: Chromium is missing and installing it needs root or sudo;" \
         "the browser test will be skipped (install it with: apt-get install chromium)" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: no apt-get here; install Chromium yourself for the browser test" >&2
    exit 0
fi

echo "ensure_chromium: installing chromium from Debian's packages" >&2
# A failed install (no route to the package mirror, say) skips the browser test; it must not
# fail the rest of the suite.
if ! { $as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
       $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; then
    echo "ensure_chromium: installing chromium failed; the browser test will be skipped" >&2
fi
