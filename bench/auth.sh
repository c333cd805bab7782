#!/usr/bin/env bash
# Auth benchmark (issue 2). Prints figures; asserts nothing.
#  1. GET /getnonce and an authenticated GET /api/v1/user, wrk 10 s × 64 connections, against
#     nginx answering a fixed 64-byte 200 in the same run (targets: ≥ 0.5× and ≥ 0.3× nginx).
#  2. GET /getnonce p99 while 32 clients hammer password login (target: < 50 ms).
#  3. GET /getnonce while 200 slowloris connections (half-sent headers, a line every 2 s) are
#     open, as a ratio to the figure without them (target >= 0.9).
#  4. Server CPU time of 100 requests for a 60 KB CID (target: under 10 ms in all), beside 100
#     requests for an ordinary unknown CID.
source "$(dirname "$0")/lib.sh"
need wrk wrk; need nginx nginx
DURATION=${DURATION:-10s}
build_release

NPORT=$(free_port); SPORT=$(free_port)
start_nginx "$NPORT" "location / { return 200 '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'; }"
DATA=$(mktemp -d)
start_stratus "$DATA" "$SPORT" STRATUS_LIMITS__DISABLED=true STRATUS_LOG=warn
trap 'kill $STRATUS_PID 2>/dev/null; stop_nginx; rm -rf "$DATA"' EXIT

echo "bench-password" | "$BIN" admin --data-dir "$DATA" user add --username bench --password-stdin >/dev/null
TOKEN=$(curl -sf -X POST "http://127.0.0.1:$SPORT/api/v1/user/loginWithClient" \
  -d '{"username":"bench","password":"bench-password"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["token"])')

echo "== wrk -t2 -c64 -d$DURATION"
wrk -t2 -c64 -d"$DURATION" "http://127.0.0.1:$NPORT/" >"$OUT/auth-nginx.txt"
wrk -t2 -c64 -d"$DURATION" "http://127.0.0.1:$SPORT/getnonce" >"$OUT/auth-getnonce.txt"
wrk -t2 -c64 -d"$DURATION" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$SPORT/api/v1/user" >"$OUT/auth-user.txt"
N=$(wrk_rps "$OUT/auth-nginx.txt"); G=$(wrk_rps "$OUT/auth-getnonce.txt"); U=$(wrk_rps "$OUT/auth-user.txt")
printf '%-34s %12s req/s\n' "nginx fixed 64-byte 200" "$N"
printf '%-34s %12s req/s  ratio %s (target >= 0.5)\n' "GET /getnonce" "$G" "$(ratio "$G" "$N")"
printf '%-34s %12s req/s  ratio %s (target >= 0.3)\n' "GET /api/v1/user (Bearer)" "$U" "$(ratio "$U" "$N")"
grep -q "Non-2xx" "$OUT/auth-getnonce.txt" "$OUT/auth-user.txt" && echo "WARNING: non-2xx answers seen" || true

echo "== GET /getnonce latency while 32 clients hammer password login"
cat >"$OUT/login.lua" <<'LUA'
wrk.method = "POST"
wrk.body   = '{"username":"bench","password":"bench-password"}'
wrk.headers["Content-Type"] = "application/json"
LUA
wrk -t1 -c32 -d"$DURATION" -s "$OUT/login.lua" "http://127.0.0.1:$SPORT/api/v1/user/loginWithClient" >"$OUT/auth-login-hammer.txt" &
HAMMER=$!
sleep 1
wrk -t1 -c4 -d"$DURATION" --latency "http://127.0.0.1:$SPORT/getnonce" >"$OUT/auth-getnonce-under-load.txt"
wait $HAMMER
L=$(wrk_rps "$OUT/auth-login-hammer.txt"); P=$(wrk_p99_ms "$OUT/auth-getnonce-under-load.txt")
printf '%-34s %12s req/s\n' "password logins (32 clients)" "$L"
printf '%-34s %12s ms (target < 50)\n' "GET /getnonce p99 under that load" "$P"

echo "== GET /getnonce while 200 slowloris connections are open"
python3 "$BENCH_ROOT/bench/httpabuse.py" slowloris 127.0.0.1 "$SPORT" 200 "$(( ${DURATION%s} + 2 ))" >"$OUT/auth-slowloris.txt" &
SLOW=$!
sleep 1
wrk -t2 -c64 -d"$DURATION" "http://127.0.0.1:$SPORT/getnonce" >"$OUT/auth-getnonce-slowloris.txt"
wait $SLOW
S=$(wrk_rps "$OUT/auth-getnonce-slowloris.txt")
printf '%-34s %12s req/s  ratio %s to %s without them (target >= 0.9); %s of 200 still open at the end\n' \
  "GET /getnonce, 200 slowloris open" "$S" "$(ratio "$S" "$G")" "$G" "$(cat "$OUT/auth-slowloris.txt")"

echo "== server CPU time of 100 requests for a 60 KB CID"
read -r LONG LONG_ST < <(python3 "$BENCH_ROOT/bench/httpabuse.py" cid-cost 127.0.0.1 "$SPORT" "$STRATUS_PID" 100 60000)
read -r SHORT SHORT_ST < <(python3 "$BENCH_ROOT/bench/httpabuse.py" cid-cost 127.0.0.1 "$SPORT" "$STRATUS_PID" 100 59)
printf '%-34s %12s ms  (%s; target < 10 ms in all)\n' "100 x GET /mefs/<60 KB CID>" "$LONG" "$LONG_ST"
printf '%-34s %12s ms  (%s)\n' "100 x GET /mefs/<59-char CID>" "$SHORT" "$SHORT_ST"
