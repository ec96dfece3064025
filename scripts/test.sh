#!/usr/bin/env bash
# `npm test`: installs pinned tools if missing, then runs every test (unit + integration) with real
# services that the vitest global setup starts and stops (PostgreSQL, Temporal dev server,
# stripe-mock, localstripe; the time-skipping server is spawned by the tests that need it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/tools.sh
# promtool checks the alert rules (test/unit/ops-files.test.ts); opt-in for npm run dev, required here.
bash scripts/tools.sh promtool
export VITE_CONFIG_NATIVE_IGNORE_WARNING=true
# Type errors fail the run before any test starts (a mistyped test can pass vacuously).
echo '[test] typecheck (tsc --noEmit)'
npx tsc --noEmit -p tsconfig.json
exec npx vitest run "$@"
