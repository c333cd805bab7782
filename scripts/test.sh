#!/usr/bin/env bash
# Runs the whole stratus test suite on a fresh Debian machine: installs and starts what the tests
# need (Docker engine, nftables and conntrack for the gateway's kernel forwarding and the sandbox
# firewall, iproute2 for the isolation tests' network namespaces, a local busybox image,
# eth-account, ganache/solc/@ipld/car from npm, Garage (an S3-compatible store, built once from
# crates.io in the background and cached under ~/.cache/stratus/garage), Debian's awscli for the S3
# tests and PostgreSQL 15 (started by scripts/postgres.sh on 127.0.0.1:55432)), checks formatting
# and lints, then runs every test: the whole workspace with each test server on its embedded
# SQLite database, then the integration tests (crates/stratus/tests/it) a second time with each
# test server on a PostgreSQL database of its own (STRATUS_TEST_PG). Tests that need PostgreSQL
# (several nodes on one database, move-store) skip in the first run and run in the second.
# Idempotent: what is already there is reused.
#
# usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '\n== %s\n' "$*"; }

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
[ -x /usr/bin/busybox ] && /usr/bin/busybox --list 2>/dev/null | grep -qx httpd || need_apt+=(busybox-static)
command -v nft >/dev/null || need_apt+=(nftables)
command -v conntrack >/dev/null || need_apt+=(conntrack)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v aws >/dev/null || need_apt+=(awscli)
[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
  || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Garage takes minutes to build the first time: it builds while the rest is set up and linted.
log "garage (S3 tests): $(scripts/garage.sh --path) — building in the background if missing"
GARAGE_LOG=$(mktemp)
# In a session of its own, so that a failure below stops the whole build (cargo and rustc too).
setsid scripts/garage.sh >"$GARAGE_LOG" 2>&1 &
GARAGE_PID=$!
trap 'kill -- "-$GARAGE_PID" 2>/dev/null || true' EXIT

log "postgresql (scripts/postgres.sh)"
STRATUS_PG_URL=$(scripts/postgres.sh | tail -n 1)

log "python peer: eth-account"
python3 -c 'import eth_account' 2>/dev/null || python3 -m pip install -q eth-account

log "node peers: ganache, solc, @ipld/car"
(cd tests/peers && { [ -d node_modules/ganache ] && [ -d node_modules/solc ] && [ -d node_modules/@ipld/car ]; } \
  || npm ci --no-audit --no-fund --loglevel=error)

log "docker engine"
"$ROOT/scripts/docker-up.sh"

log "test image stratus-test/busybox"
"$ROOT/scripts/test-image.sh"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

log "waiting for the garage build"
if ! wait "$GARAGE_PID"; then
  cat "$GARAGE_LOG" >&2
  echo "building Garage failed" >&2
  exit 1
fi
STRATUS_GARAGE=$(tail -n 1 "$GARAGE_LOG")
export STRATUS_GARAGE

log "cargo test"
export STRATUS_REQUIRE_PEERS=1
# Tests that need PostgreSQL (several nodes, move-store) skip here and run in the next pass.
STRATUS_PG_PASS_FOLLOWS=1 cargo test --workspace "$@"

log "cargo test, on PostgreSQL: the core's store tests and the integration tests"
export STRATUS_TEST_PG=$STRATUS_PG_URL
cargo test -p stratus-model -p stratus-store "$@"
cargo test -p stratus --test it "$@"
