#!/usr/bin/env bash
# The whole StemeDB test suite, from a fresh machine: installs what the tests need, then runs
# formatting and lint checks, the Rust tests (unit, property, end-to-end against the real binary)
# and the interop tests against independent implementations (PyNaCl/libsodium, blake3, openssl),
# and schemathesis against the served OpenAPI document.
# Usage: ./scripts/test.sh        (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
# Nothing here reads standard input; detach it so no tool (cargo probes `rustc -`) sees a stray one.
exec </dev/null

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# Cargo learns about the target by running `rustc -` and feeding it a probe on stdin; when cargo
# itself was started with a stdin it inherits (some CI and tool shells leave one open, once full
# of NUL bytes), the probe fails with "failed to run `rustc` to learn about target-specific
# information" and cargo caches the failure in target/.rustc_info.json. So: standard input is
# /dev/null (above), no probe cache across cargo runs, and a retry with pauses for a step that
# still fails this way. One heavy cargo command (nextest, which also builds the binary) runs
# before the tests, clippy last.
export CARGO_CACHE_RUSTC_INFO=0
cargo_step() {
  local attempt log
  log=$(mktemp)
  for attempt in 1 2 3; do
    # Standard input is an empty pipe, not /dev/null: on one CI VM /dev/null was replaced by a
    # regular file mid-run (Chromium's launcher then wrote an `ls` error into it), and cargo's
    # probe compiled that text.
    if cargo "$@" < <(:) 2>&1 | tee "$log"; then rm -f "$log"; return 0; fi
    if ! grep -q "to learn about target-specific information" "$log"; then rm -f "$log"; return 1; fi
    printf 'test.sh: cargo could not probe rustc (attempt %s); retrying\n' "$attempt" >&2
    rm -f target/.rustc_info.json
    sleep $((attempt * 20))
  done
  rm -f "$log"
  return 1
}

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# System packages the tests use. Installed when missing; a failed install stops the run.
apt_packages=()
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
command -v python3 >/dev/null 2>&1 || apt_packages+=(python3 python3-pip)
command -v curl >/dev/null 2>&1 || apt_packages+=(curl)
# promtool (Debian ships it in the prometheus package): the monitoring tests run it.
command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
# systemd-analyze for the unit files (tests/systemd.rs).
command -v systemd-analyze >/dev/null 2>&1 || apt_packages+=(systemd)
# A real nginx for the TLS proxy test (tests/proxy.rs).
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_packages+=(nginx)
# Headless Chromium and Node (npm) for the dashboard's Playwright tests (tests/dashboard).
[ -x /usr/bin/chromium ] || apt_packages+=(chromium)
command -v npm >/dev/null 2>&1 || apt_packages+=(nodejs npm)
# A C compiler for the power-cut test's lazy-writes shim (tests/lazyfs/lazyfs.c, LD_PRELOAD).
command -v cc >/dev/null 2>&1 || apt_packages+=(gcc libc6-dev)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  step "installing system packages: ${apt_packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_packages[@]}"
fi
command -v promtool >/dev/null 2>&1 || die "promtool did not install (apt-get install prometheus)"
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin"
command -v nginx >/dev/null 2>&1 || die "nginx did not install (apt-get install nginx)"
command -v systemd-analyze >/dev/null 2>&1 || die "systemd-analyze did not install (apt-get install systemd)"
[ -x /usr/bin/chromium ] || die "chromium did not install (apt-get install chromium)"
command -v npm >/dev/null 2>&1 || die "npm did not install (apt-get install nodejs npm)"
command -v cc >/dev/null 2>&1 || die "no C compiler (apt-get install gcc libc6-dev)"

step "installing the dashboard test dependencies (tests/dashboard: playwright-core, no browser download)"
(cd tests/dashboard && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) \
  || die "npm ci in tests/dashboard failed"

step "installing Python test dependencies (tests/interop/requirements.txt)"
if ! python3 -m pip --version >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip || die "no pip"
fi
python3 -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
       -r tests/interop/requirements.txt \
  || die "cannot install Python test dependencies"
python3 -c 'import nacl, blake3, pytest, schemathesis, yaml' || die "Python test dependencies did not import"
# pip puts console scripts (schemathesis' `st`) in ~/.local/bin for a user install.
export PATH="$HOME/.local/bin:$PATH"
command -v st >/dev/null 2>&1 || die "schemathesis' st command is not on PATH"

if ! cargo nextest --version < <(:) >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install --locked cargo-nextest < <(:) || die "cannot install cargo-nextest"
fi

step "cargo fmt --check"
cargo_step fmt --all -- --check

step "Rust tests (cargo nextest; builds the stemedb binary the end-to-end and interop tests run)"
RUST_LOG_FILE=$(mktemp)
cargo_step nextest run --workspace --locked --no-fail-fast | tee "$RUST_LOG_FILE"
test -x target/debug/stemedb || die "nextest did not build target/debug/stemedb"
rust_passed=$(sed -n 's/.* tests run: \([0-9]*\) passed.*/\1/p' "$RUST_LOG_FILE" | tail -n 1)

step "disaster-recovery drill (scripts/dr-drill.sh): backup, archive, destroy, restore; RTO and RPO"
STEMEDB_BIN="$PWD/target/debug/stemedb" ./scripts/dr-drill.sh 20000 || die "the DR drill failed"
drill_passed=1

step "Python interop tests (PyNaCl, blake3, openssl) and schemathesis against /v1/openapi.json"
PY_LOG_FILE=$(mktemp)
STEMEDB_BIN="$PWD/target/debug/stemedb" python3 -m pytest -q tests/interop | tee "$PY_LOG_FILE"
py_passed=$(sed -n 's/^\([0-9]*\) passed.*/\1/p' "$PY_LOG_FILE" | tail -n 1)

step "Python client (clients/python): pip install, then pytest against a real server"
python3 -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./clients/python \
  || python3 -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
       --break-system-packages ./clients/python \
  || die "pip install ./clients/python failed"
(cd /tmp && STEMEDB_BIN="$OLDPWD/target/debug/stemedb" python3 -m pytest -q "$OLDPWD/clients/python/tests") \
  | tee "$PY_LOG_FILE"
client_passed=$(sed -n 's/^\([0-9]*\) passed.*/\1/p' "$PY_LOG_FILE" | tail -n 1)
[ -n "$client_passed" ] || die "the Python client tests did not report"
py_passed=$(( ${py_passed:-0} + client_passed ))

step "dashboard (Playwright, Debian's Chromium) against a real server"
DASH_LOG_FILE=$(mktemp)
(cd tests/dashboard && STEMEDB_BIN="$OLDPWD/target/debug/stemedb" ARTIFACTS="$OLDPWD/target/artifacts" \
  node --test --test-reporter=spec dashboard.test.mjs) | tee "$DASH_LOG_FILE"
dash_passed=$(sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' "$DASH_LOG_FILE" | tail -n 1)
dash_failed=$(sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' "$DASH_LOG_FILE" | tail -n 1)
[ -n "$dash_passed" ] && [ "${dash_failed:-1}" = 0 ] || die "the dashboard tests failed or did not report"
py_passed=$(( ${py_passed:-0} + dash_passed ))
rm -f "$DASH_LOG_FILE"

step "cargo clippy --all-targets -- -D warnings"
cargo_step clippy --workspace --all-targets --locked -- -D warnings

# Every step above stops the script on failure, so reaching this line means nothing failed.
rm -f "$RUST_LOG_FILE" "$PY_LOG_FILE"
printf '\nsuite: %s passed, 0 failed\n' "$(( ${rust_passed:-0} + ${py_passed:-0} + ${drill_passed:-0} ))"
