#!/usr/bin/env bash
# Scale benchmark (issue 11): the shared store against the embedded one, in the same run.
#  1. durable purchases/s, 32 clients: PostgreSQL vs SQLite                (target PG >= 0.7x)
#  2. authenticated GET /api/v1/user req/s: PostgreSQL vs SQLite           (target >= 0.8x)
#  3. GET /getnonce req/s: PostgreSQL vs SQLite                            (target >= 0.5x)
#  4. 1 GiB upload into Garage through stratus vs `aws s3 cp` of the same file into the same
#     Garage                                                               (target >= 0.8x)
#  5. two nodes vs one node behind a round-robin proxy (HAProxy): req/s and purchases/s
#     (two cores: reported, not a target)
#  6. peak RSS per node while 4 GiB stream into Garage                     (target <= 100 MiB)
# PostgreSQL comes from scripts/postgres.sh, Garage from scripts/garage-cluster.sh (three nodes,
# replication factor 3). Prints figures and ratios; asserts nothing but a balanced ledger.
source "$(dirname "$0")/lib.sh"
need wrk wrk; need haproxy haproxy; need aws awscli; need psql postgresql-client
DURATION=${DURATION:-10s}
build_release

PG_BASE=$("$BENCH_ROOT/scripts/postgres.sh" | tail -n 1)
GDIR=$(mktemp -d)
"$BENCH_ROOT/scripts/garage-cluster.sh" "$GDIR/cluster" >"$GDIR/env"
set -a; . "$GDIR/env"; set +a
GARAGE_ENV=()
while IFS= read -r line; do
  case $line in STRATUS_STORAGE__*) GARAGE_ENV+=("$line") ;; esac
done <"$GDIR/env"

PIDS=(); DIRS=("$GDIR"); DBS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${HAPROXY_PID:-}" ] && kill "$HAPROXY_PID" 2>/dev/null || true
  "$BENCH_ROOT/scripts/garage-cluster.sh" --stop "$GDIR/cluster" >/dev/null 2>&1 || true
  for d in "${DBS[@]}"; do psql "$PG_BASE" -qAt -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
  for d in "${DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

# new_pg — creates a fresh database and sets PGURL to it (no subshell: cleanup drops it).
new_pg() {
  local name="stratus_bench_$RANDOM$RANDOM"
  psql "$PG_BASE" -qAt -c "CREATE DATABASE $name" >/dev/null
  DBS+=("$name")
  PGURL="${PG_BASE%/*}/$name"
}
# node DATA_DIR PORT [ENV=VAL…] — starts a node, records its pid.
node() { start_stratus "$@"; PIDS+=("$STRATUS_PID"); }
# login PORT — a token for the `bench` account (funded for every purchase the run could make).
PRICE=1000000000000000
CREDIT=$(python3 -c "print($PRICE * 10000000 + 7)")
setup_account() { # DATA_DIR PORT [ENV=VAL…]
  local dir=$1 port=$2; shift 2
  echo "bench-password" | env "$@" "$BIN" admin --data-dir "$dir" user add --username bench --password-stdin >/dev/null
  env "$@" "$BIN" admin --data-dir "$dir" credit --account bench --amount "$CREDIT" --reason bench >/dev/null
  curl -sf -X POST "http://127.0.0.1:$port/api/v1/user/loginWithClient" \
    -d '{"username":"bench","password":"bench-password"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["token"])'
}
buy_lua() {
  cat >"$OUT/scale-buy.lua" <<LUA
wrk.method = "POST"
wrk.body   = '{"pkgid":1,"amount":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $1"
LUA
}
# measure NAME URL TOKEN — sets BUY, USER, NONCE (req/s) for the server at URL.
measure() {
  local name=$1 url=$2 token=$3
  buy_lua "$token"
  wrk -t2 -c32 -d"$DURATION" -s "$OUT/scale-buy.lua" "$url/mefs/buypkg" >"$OUT/scale-$name-buy.txt"
  wrk -t2 -c64 -d"$DURATION" -H "Authorization: Bearer $token" "$url/api/v1/user" >"$OUT/scale-$name-user.txt"
  wrk -t2 -c64 -d"$DURATION" "$url/getnonce" >"$OUT/scale-$name-nonce.txt"
  BUY=$(wrk_rps "$OUT/scale-$name-buy.txt"); USER=$(wrk_rps "$OUT/scale-$name-user.txt"); NONCE=$(wrk_rps "$OUT/scale-$name-nonce.txt")
}
COMMON=(STRATUS_LIMITS__DISABLED=true STRATUS_LOG=warn)

# --- 1-3. PostgreSQL vs SQLite -----------------------------------------------------------------
echo "== 1-3. PostgreSQL vs SQLite (wrk, $DURATION; purchases 32 connections, reads 64)"
D=$(mktemp -d); DIRS+=("$D"); P=$(free_port)
node "$D" "$P" "${COMMON[@]}"
T=$(setup_account "$D" "$P" "${COMMON[@]}")
measure sqlite "http://127.0.0.1:$P" "$T"
S_BUY=$BUY; S_USER=$USER; S_NONCE=$NONCE
kill "$STRATUS_PID"; wait "$STRATUS_PID" 2>/dev/null || true

new_pg
D=$(mktemp -d); DIRS+=("$D"); P=$(free_port)
node "$D" "$P" "${COMMON[@]}" "STRATUS_DATABASE__URL=$PGURL"
T=$(setup_account "$D" "$P" "${COMMON[@]}" "STRATUS_DATABASE__URL=$PGURL")
measure pg "http://127.0.0.1:$P" "$T"
P_BUY=$BUY; P_USER=$USER; P_NONCE=$NONCE
kill "$STRATUS_PID"; wait "$STRATUS_PID" 2>/dev/null || true
VERIFY=$(STRATUS_DATABASE__URL=$PGURL "$BIN" admin --data-dir "$D" ledger verify)
MISMATCH=$(python3 -c 'import json,sys; print(len(json.loads(sys.stdin.read())["mismatches"]))' <<<"$VERIFY")
printf '  %-34s %10s %10s %6s %s\n' "" "SQLite" "PostgreSQL" "ratio" "target"
printf '  %-34s %10s %10s %5sx %s\n' "purchases/s (32 clients)" "$S_BUY" "$P_BUY" "$(ratio "$P_BUY" "$S_BUY")" ">= 0.7x"
printf '  %-34s %10s %10s %5sx %s\n' "GET /api/v1/user req/s" "$S_USER" "$P_USER" "$(ratio "$P_USER" "$S_USER")" ">= 0.8x"
printf '  %-34s %10s %10s %5sx %s\n' "GET /getnonce req/s" "$S_NONCE" "$P_NONCE" "$(ratio "$P_NONCE" "$S_NONCE")" ">= 0.5x"
if [ "$MISMATCH" != 0 ]; then echo "LEDGER ON POSTGRESQL DOES NOT BALANCE"; exit 1; fi
echo "  ledger on PostgreSQL balances"

# --- 4. 1 GiB into Garage: stratus vs aws s3 cp ------------------------------------------------
echo "== 4. 1 GiB upload into Garage (3 nodes, replication 3): stratus vs aws s3 cp"
FILE=$GDIR/1g.bin
head -c $((1 << 30)) /dev/urandom >"$FILE"
new_pg
D=$(mktemp -d); DIRS+=("$D"); P=$(free_port)
NODE_ENV=("${COMMON[@]}" "STRATUS_DATABASE__URL=$PGURL" "${GARAGE_ENV[@]}")
node "$D" "$P" "${NODE_ENV[@]}"
T=$(setup_account "$D" "$P" "${NODE_ENV[@]}")
SECS_S=$(curl -s -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $T" -F "file=@$FILE" "http://127.0.0.1:$P/mefs/")
START=$(date +%s.%N)
aws --endpoint-url "$GARAGE_ENDPOINT" s3 cp --quiet "$FILE" "s3://$GARAGE_BUCKET/bench-aws-1g"
SECS_A=$(python3 -c "import time,sys; print(f'{time.time()-float(sys.argv[1]):.3f}')" "$START")
MB=1024
RATE_S=$(python3 -c "print(f'{$MB/$SECS_S:.0f}')"); RATE_A=$(python3 -c "print(f'{$MB/$SECS_A:.0f}')")
printf '  %-34s %8ss %6s MiB/s\n' "stratus (multipart to Garage)" "$SECS_S" "$RATE_S"
printf '  %-34s %8ss %6s MiB/s\n' "aws s3 cp" "$SECS_A" "$RATE_A"
printf '  ratio %sx (target >= 0.8x)\n' "$(ratio "$RATE_S" "$RATE_A")"

# --- 6. peak RSS during a 4 GiB upload to Garage ----------------------------------------------
echo "== 6. peak RSS of the node while 4 GiB stream into Garage"
BASE=$(awk '/VmHWM/ {print $2}' "/proc/$STRATUS_PID/status")
truncate -s 4G "$GDIR/4g.bin"   # sparse: no disk for the source
curl -s -o /dev/null -H "Authorization: Bearer $T" -F "file=@$GDIR/4g.bin" "http://127.0.0.1:$P/mefs/"
PEAK=$(awk '/VmHWM/ {print $2}' "/proc/$STRATUS_PID/status")
printf '  peak RSS before %s MiB, after %s MiB (target <= 100 MiB)\n' "$((BASE / 1024))" "$((PEAK / 1024))"
kill "$STRATUS_PID"; wait "$STRATUS_PID" 2>/dev/null || true
rm -f "$FILE" "$GDIR/4g.bin"

# --- 5. two nodes vs one behind HAProxy -------------------------------------------------------
echo "== 5. one node vs two nodes behind HAProxy (round robin), one PostgreSQL, one Garage"
new_pg
KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
NODE_ENV=("${COMMON[@]}" "STRATUS_DATABASE__URL=$PGURL" "STRATUS_JWT_KEY=$KEY" "${GARAGE_ENV[@]}")
D1=$(mktemp -d); D2=$(mktemp -d); DIRS+=("$D1" "$D2"); P1=$(free_port); P2=$(free_port)
node "$D1" "$P1" "${NODE_ENV[@]}"
node "$D2" "$P2" "${NODE_ENV[@]}"
T=$(setup_account "$D1" "$P1" "${NODE_ENV[@]}")
# haproxy_with PORT BACKEND_PORT… — HAProxy in front of the given nodes.
haproxy_with() {
  local port=$1; shift
  [ -n "${HAPROXY_PID:-}" ] && { kill "$HAPROXY_PID" 2>/dev/null || true; wait "$HAPROXY_PID" 2>/dev/null || true; }
  {
    printf 'global\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n'
    printf 'frontend f\n  bind 127.0.0.1:%s\n  default_backend nodes\nbackend nodes\n  balance roundrobin\n' "$port"
    local i=0
    for b in "$@"; do i=$((i + 1)); printf '  server n%s 127.0.0.1:%s\n' "$i" "$b"; done
  } >"$GDIR/haproxy.cfg"
  haproxy -f "$GDIR/haproxy.cfg" >"$OUT/scale-haproxy.log" 2>&1 &
  HAPROXY_PID=$!
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.1; done
  echo "haproxy did not start; see $OUT/scale-haproxy.log" >&2; exit 1
}
HP=$(free_port)
haproxy_with "$HP" "$P1"
measure one "http://127.0.0.1:$HP" "$T"
O_BUY=$BUY; O_USER=$USER; O_NONCE=$NONCE
HP=$(free_port)
haproxy_with "$HP" "$P1" "$P2"
measure two "http://127.0.0.1:$HP" "$T"
W_BUY=$BUY; W_USER=$USER; W_NONCE=$NONCE
printf '  %-34s %10s %10s %6s\n' "" "one node" "two nodes" "ratio"
printf '  %-34s %10s %10s %5sx\n' "purchases/s (32 clients)" "$O_BUY" "$W_BUY" "$(ratio "$W_BUY" "$O_BUY")"
printf '  %-34s %10s %10s %5sx\n' "GET /api/v1/user req/s" "$O_USER" "$W_USER" "$(ratio "$W_USER" "$O_USER")"
printf '  %-34s %10s %10s %5sx\n' "GET /getnonce req/s" "$O_NONCE" "$W_NONCE" "$(ratio "$W_NONCE" "$O_NONCE")"
echo "  (two cores: the nodes, HAProxy, PostgreSQL, Garage and wrk share them; reported, not a target)"
VERIFY=$(STRATUS_DATABASE__URL=$PGURL "$BIN" admin --data-dir "$D1" ledger verify)
MISMATCH=$(python3 -c 'import json,sys; print(len(json.loads(sys.stdin.read())["mismatches"]))' <<<"$VERIFY")
if [ "$MISMATCH" != 0 ]; then echo "LEDGER ON TWO NODES DOES NOT BALANCE"; exit 1; fi
echo "  ledger after two nodes balances"
