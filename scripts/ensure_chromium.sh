#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (playwright's own browser download does not work offline). Install it
# when missing, or fail with what to do: the default suite runs the browser tests and never skips them.
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
fi
if [ ! -x "$CHROMIUM" ]; then
    echo "error: $CHROMIUM is missing. Install it (Debian: 'sudo apt-get install -y chromium'); the browser tests need it." >&2
    exit 1
fi
