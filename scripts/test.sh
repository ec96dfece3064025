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
# Type errors fail the run (a mistyped test can pass vacuously). The typecheck runs beside the tests,
# which start at once; its verdict is printed and counted when they end.
TSC_LOG="$(mktemp)"
npx tsc --noEmit -p tsconfig.json >"$TSC_LOG" 2>&1 &
TSC_PID=$!
trap 'kill "$TSC_PID" 2>/dev/null || true; rm -f "$TSC_LOG"' EXIT
set +e
npx vitest run "$@"
TESTS_RC=$?
wait "$TSC_PID"
TSC_RC=$?
set -e
if [[ $TSC_RC -ne 0 ]]; then
  echo '[test] typecheck (tsc --noEmit) FAILED:'
  cat "$TSC_LOG"
else
  echo '[test] typecheck (tsc --noEmit) passed'
fi
if [[ $TESTS_RC -ne 0 ]]; then exit "$TESTS_RC"; fi
exit "$TSC_RC"
