#!/usr/bin/env bash
# Starts (once) a PostgreSQL 15 server for the tests and benchmarks: installs Debian's package if
# no PostgreSQL is there, initialises a cluster of its own (not Debian's `main` cluster) the first
# time, and runs it as the unprivileged `postgres` OS user, listening on 127.0.0.1 only (port
# $STRATUS_PG_PORT, default 55432; its unix socket in the cluster's run dir). A `stratus` superuser
# role (password `stratus`) is what the tests connect as; every test server gets a database of its
# own, so max_connections is high (500). Idempotent: a server already running is reused.
#
# The cluster lives in $STRATUS_PG_DIR, by default
# ${STRATUS_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/stratus}/pg when the postgres user can reach
# that directory, else /var/tmp/stratus-pg-<uid> (root's home is private to root).
#
# Prints the base URL on its last stdout line, e.g. postgres://stratus:stratus@127.0.0.1:55432/postgres
#
# usage: scripts/postgres.sh          # install if missing, start if stopped, print the URL
#        scripts/postgres.sh --stop   # stop the server (the cluster stays for the next start)
set -euo pipefail

PORT="${STRATUS_PG_PORT:-55432}"
ROLE=stratus
PASSWORD=stratus
URL="postgres://$ROLE:$PASSWORD@127.0.0.1:$PORT/postgres"
log() { printf '== %s\n' "$*" >&2; }

pg_bindir() {
  if [ -x /usr/lib/postgresql/15/bin/postgres ]; then
    echo /usr/lib/postgresql/15/bin
    return
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/postgres" ] && echo "$d"
}

BIN=$(pg_bindir || true)
if [ -z "$BIN" ] && [ "${1:-}" != "--stop" ]; then
  log "installing PostgreSQL (Debian)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql-15 >/dev/null 2>&1 || apt-get install -y -qq postgresql >/dev/null
  BIN=$(pg_bindir)
fi
if ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# The directory: the cache when the postgres user can get there, else one under /var/tmp.
CACHE="${STRATUS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/stratus}"
if [ -n "${STRATUS_PG_DIR:-}" ]; then
  DIR=$STRATUS_PG_DIR
else
  DIR="$CACHE/pg"
  mkdir -p "$DIR"
  if ! runuser -u postgres -- test -x "$DIR"; then
    rmdir "$DIR" 2>/dev/null || true
    DIR="/var/tmp/stratus-pg-$(id -u)"
  fi
fi
DATA="$DIR/data"
RUN="$DIR/run"
as_pg() { runuser -u postgres -- "$@"; }

if [ "${1:-}" = "--stop" ]; then
  if [ -n "$BIN" ] && [ -f "$DATA/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
  else
    log "no PostgreSQL running in $DATA"
  fi
  exit 0
fi

mkdir -p "$DIR"
chown postgres: "$DIR"
if [ ! -f "$DATA/PG_VERSION" ]; then
  log "initialising a PostgreSQL cluster in $DATA"
  rm -rf "$DATA"
  as_pg mkdir -p "$DATA" "$RUN"
  as_pg "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --no-locale \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  cat >>"$DATA/postgresql.conf" <<EOF

# scripts/postgres.sh: loopback only, enough connections for many test servers at once.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
max_connections = 500
shared_buffers = 128MB
logging_collector = off
EOF
  # Local (socket) connections: the postgres OS user as itself, anyone as stratus (tests' psql).
  cat >"$DATA/pg_hba.conf" <<EOF
local all postgres peer
local all $ROLE trust
host all all 127.0.0.1/32 scram-sha-256
EOF
  chown postgres: "$DATA/postgresql.conf" "$DATA/pg_hba.conf"
fi
as_pg mkdir -p "$RUN"

if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  log "PostgreSQL already running ($DATA)"
else
  log "starting PostgreSQL on 127.0.0.1:$PORT ($DATA)"
  # A stale pid file from a killed server is removed by pg_ctl itself when no process matches.
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/postgres.log" -w -t 120 start >/dev/null ||
    { tail -n 30 "$DIR/postgres.log" >&2; exit 1; }
fi

# The role the tests use (created once).
as_pg "$BIN/psql" -h "$RUN" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt >/dev/null <<EOF
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN SUPERUSER PASSWORD '$PASSWORD';
  END IF;
END \$\$;
EOF
PGPASSWORD=$PASSWORD "$BIN/psql" "$URL" -qAt -c 'SELECT 1' >/dev/null
echo "$URL"
