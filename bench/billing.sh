#!/usr/bin/env bash
# Billing benchmark (issue 4): purchases per second with 32 concurrent clients against the
# embedded store, then the ledger is checked to balance to the unit: debits must equal
# purchases × price exactly. Prints figures; the script fails only if the ledger does not balance.
source "$(dirname "$0")/lib.sh"
need wrk wrk
DURATION=${DURATION:-10s}
build_release
DATA=$(mktemp -d); PORT=$(free_port)
start_stratus "$DATA" "$PORT" STRATUS_LIMITS__DISABLED=true STRATUS_LOG=warn
trap 'kill $STRATUS_PID 2>/dev/null; rm -rf "$DATA"' EXIT
PRICE=1000000000000000   # package 1 (default config)
echo "bench-password" | "$BIN" admin --data-dir "$DATA" user add --username bench --password-stdin >/dev/null
# Enough for every purchase the run could make, plus an odd remainder.
CREDIT=$(python3 -c "print($PRICE * 10000000 + 7)")   # beyond 64 bits: not bash arithmetic
"$BIN" admin --data-dir "$DATA" credit --account bench --amount "$CREDIT" --reason bench >/dev/null
TOKEN=$(curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/user/loginWithClient" \
  -d '{"username":"bench","password":"bench-password"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["token"])')
cat >"$OUT/buy.lua" <<LUA
wrk.method = "POST"
wrk.body   = '{"pkgid":1,"amount":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
wrk -t2 -c32 -d"$DURATION" -s "$OUT/buy.lua" "http://127.0.0.1:$PORT/mefs/buypkg" >"$OUT/billing-wrk.txt"
RPS=$(wrk_rps "$OUT/billing-wrk.txt")
NON2XX=$(awk '/Non-2xx/ {print $NF}' "$OUT/billing-wrk.txt"); NON2XX=${NON2XX:-0}
kill "$STRATUS_PID"; wait "$STRATUS_PID" 2>/dev/null || true
VERIFY=$("$BIN" admin --data-dir "$DATA" ledger verify)
PURCHASES=$(python3 - "$DATA/stratus.db" <<'PY'
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM purchases").fetchone()[0])
PY
)
DEBITS=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["total_debits"])' <<<"$VERIFY")
MISMATCH=$(python3 -c 'import json,sys; print(len(json.loads(sys.stdin.read())["mismatches"]))' <<<"$VERIFY")
printf '%-44s %10s /s\n' "purchases, 32 concurrent clients" "$RPS"
printf '%-44s %10s\n' "purchases recorded" "$PURCHASES"
printf '%-44s %10s\n' "non-2xx answers" "$NON2XX"
printf '%-44s %s\n' "debits" "$DEBITS"
EXPECTED=$(python3 -c "print($PURCHASES * $PRICE)")
printf '%-44s %s\n' "purchases x price" "$EXPECTED"
if [ "$DEBITS" = "$EXPECTED" ] && [ "$MISMATCH" = 0 ]; then
  echo "ledger balances to the unit: debits = purchases x price, every running balance re-derives"
else
  echo "LEDGER DOES NOT BALANCE"; exit 1
fi
