#!/usr/bin/env bash
# `npm run dev`: install pinned tools if missing, then run the whole stack (see scripts/dev.ts).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ -d node_modules ]] || npm ci --no-audit --no-fund
bash scripts/tools.sh
exec node_modules/.bin/tsx scripts/dev.ts
