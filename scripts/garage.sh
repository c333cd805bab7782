#!/usr/bin/env bash
# Builds (once) the Garage S3-compatible object store that the S3 storage tests start, and caches
# the binary under .cache/garage/<version>-<features>/bin/garage in the repository (ignored by
# git). A later run finds the binary and builds nothing. Prints the binary's path on stdout.
#
# usage: scripts/garage.sh          # build if missing, print the path
#        scripts/garage.sh --path   # print the path only (whether or not it is built)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

GARAGE_VERSION=2.5.0
# The tests use the SQLite metadata engine only; leaving out LMDB, K2V and the metrics exporter
# shortens the build by a few minutes.
GARAGE_FEATURES=bundled-libs,sqlite
KEY="$GARAGE_VERSION-$(printf '%s' "$GARAGE_FEATURES" | sha256sum | cut -c1-8)"
PREFIX="$ROOT/.cache/garage/$KEY"
BIN="$PREFIX/bin/garage"

if [ "${1:-}" = "--path" ]; then
  echo "$BIN"
  exit 0
fi

if [ ! -x "$BIN" ]; then
  # The build's own target dir lives beside the cache so that an interrupted build resumes;
  # the install root starts empty (cargo would take a half-done one for installed).
  rm -rf "$PREFIX.partial"
  nice -n 10 cargo install --quiet --locked garage --version "=$GARAGE_VERSION" \
    --no-default-features --features "$GARAGE_FEATURES" \
    --root "$PREFIX.partial" --target-dir "$ROOT/.cache/garage/target" >&2
  mkdir -p "$PREFIX/bin"
  mv "$PREFIX.partial/bin/garage" "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
  rm -rf "$PREFIX.partial" "$ROOT/.cache/garage/target"
fi
"$BIN" --version >/dev/null
echo "$BIN"
