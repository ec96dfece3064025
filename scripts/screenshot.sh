#!/usr/bin/env bash
# Installs Debian's chromium if missing, then takes the Temporal UI screenshots (scripts/screenshot.ts).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ ! -x /usr/bin/chromium ]]; then
  command -v apt-get >/dev/null || { echo "chromium missing and apt-get unavailable" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
exec node_modules/.bin/tsx scripts/screenshot.ts "$@"
