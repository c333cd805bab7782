#!/usr/bin/env bash
# Builds (once) the Garage S3-compatible object store that the S3 storage tests start, and caches
# the binary under $STRATUS_CACHE_DIR/garage/<version>-<features hash>/bin/garage
# (STRATUS_CACHE_DIR defaults to ${XDG_CACHE_HOME:-~/.cache}/stratus, outside the clone, so every
# clone and worktree of the machine shares one build). A later run finds the binary and builds
# nothing. Prints the binary's path on stdout.
#
# usage: scripts/garage.sh          # build if missing, print the path
#        scripts/garage.sh --path   # print the path only (whether or not it is built)
set -euo pipefail
cd "$(dirname "$0")/.."

GARAGE_VERSION=2.5.0
# The tests use the SQLite metadata engine only; leaving out LMDB, K2V and the metrics exporter
# shortens the build by a few minutes.
GARAGE_FEATURES=bundled-libs,sqlite
KEY="$GARAGE_VERSION-$(printf '%s' "$GARAGE_FEATURES" | sha256sum | cut -c1-8)"
CACHE="${STRATUS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratus}/garage"
PREFIX="$CACHE/$KEY"
BIN="$PREFIX/bin/garage"

if [ "${1:-}" = "--path" ]; then
  echo "$BIN"
  exit 0
fi

if [ ! -x "$BIN" ]; then
  # The build's own target dir lives beside the cache so that an interrupted build resumes;
  # the install root starts empty (cargo would take a half-done one for installed).
  mkdir -p "$CACHE"
  rm -rf "$PREFIX.partial"
  nice -n 10 cargo install --quiet --locked garage --version "=$GARAGE_VERSION" \
    --no-default-features --features "$GARAGE_FEATURES" \
    --root "$PREFIX.partial" --target-dir "$CACHE/target" >&2
  mkdir -p "$PREFIX/bin"
  mv "$PREFIX.partial/bin/garage" "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
  rm -rf "$PREFIX.partial" "$CACHE/target"
fi
"$BIN" --version >/dev/null
echo "$BIN"
