#!/usr/bin/env bash
# `npm run dev`: install pinned tools if missing, then run the whole stack (see scripts/dev.ts).
# exec all the way down (package.json's "exec bash …", then exec node here): the PID that npm, an IDE or
# a process manager signals is, or forwards to, the node process that stops the stack.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ -d node_modules ]] || npm ci --no-audit --no-fund
bash scripts/tools.sh
exec node --import tsx scripts/dev.ts
