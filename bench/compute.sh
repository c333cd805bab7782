#!/usr/bin/env bash
# Compute benchmark (issue 5). Prints figures and ratios measured in one run; asserts nothing.
#  1. POST /api/v1/sandbox → first byte through the mapping, vs `docker run -d` of the same image
#     plus the first byte from its container IP                              (target ≤ 1.5×)
#  2. 1 GiB streamed through a mapping vs the same stream straight to the container IP
#                                                                            (target ≥ 0.8×)
#  3. 200 concurrent connections through one mapping, each echoing 1 MiB    (target: no error)
# The server runs with its default forwarding (auto: kernel when nft/conntrack are there); set
# STRATUS_COMPUTE__GATEWAY_FORWARDING=userspace to measure the splice relay instead.
# Needs Docker and the stratus-test/busybox image (scripts/docker-up.sh, scripts/test-image.sh).
source "$(dirname "$0")/lib.sh"
MIB=${MIB:-1024}; RUNS=${RUNS:-3}
"$BENCH_ROOT/scripts/docker-up.sh"; "$BENCH_ROOT/scripts/test-image.sh"
build_release
TCP="python3 $BENCH_ROOT/bench/tcpbench.py"
DATA=$(mktemp -d); PORT=$(free_port)
start_stratus "$DATA" "$PORT" STRATUS_LIMITS__DISABLED=true STRATUS_LOG=warn \
  STRATUS_COMPUTE__GATEWAY_BIND=127.0.0.1 STRATUS_COMPUTE__SERVER_IP=127.0.0.1 \
  STRATUS_COMPUTE__PORT_MIN=45001 STRATUS_COMPUTE__PORT_MAX=45100 \
  STRATUS_COMPUTE__LOCAL_IMAGES='["stratus-test/busybox:latest"]'
DIRECT=""
cleanup() {
  kill "$STRATUS_PID" 2>/dev/null; wait "$STRATUS_PID" 2>/dev/null
  [ -n "$DIRECT" ] && docker rm -f "$DIRECT" >/dev/null 2>&1
  for c in $(docker ps -aq --filter "label=io.stratus.owner=$(cat "$DATA/server.id")"); do docker rm -f "$c" >/dev/null 2>&1; done
  for n in $(docker network ls -q --filter "label=io.stratus.owner=$(cat "$DATA/server.id")"); do docker network rm "$n" >/dev/null; done
  rm -rf "$DATA"
}
trap cleanup EXIT
echo "bench-password" | "$BIN" admin --data-dir "$DATA" user add --username bench --password-stdin >/dev/null
"$BIN" admin --data-dir "$DATA" credit --account bench --amount 100000000000000000000 --reason bench >/dev/null
TOKEN=$(curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/user/loginWithClient" \
  -d '{"username":"bench","password":"bench-password"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["token"])')
b64() { base64 -w0; }
sandbox() { # COMPOSE MAPPINGS_JSON → response JSON
  curl -sf -X POST "http://127.0.0.1:$PORT/api/v1/sandbox" -H "Authorization: Bearer $TOKEN" \
    -d "{\"instance\":{\"specId\":1,\"imageId\":1,\"duration\":1,\"name\":\"bench\",\"dockerCompose\":\"$(printf '%s' "$1" | b64)\"},\"networkMapping\":$2}"
}
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
delete_instance() { curl -sf -X DELETE "http://127.0.0.1:$PORT/api/v1/instance/$1" -H "Authorization: Bearer $TOKEN" >/dev/null; }
wait_running() { curl -sf "http://127.0.0.1:$PORT/api/v1/instance/$1/wait?status=1&timeout=60" -H "Authorization: Bearer $TOKEN" >/dev/null; }
now() { date +%s.%N; }

WEB='services:
  web:
    image: stratus-test/busybox:latest
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["80:80"]'

echo "== 1. time to the first byte (best of $RUNS)"
S=(); D=()
for _ in $(seq "$RUNS"); do
  t0=$(now)
  R=$(sandbox "$WEB" '[{"name":"web","protocol":"TCP","computerPort":80}]')
  SP=$(jq_py 'd["data"]["networkMappings"][0]["serverPort"]' <<<"$R"); ID=$(jq_py 'd["data"]["instanceId"]' <<<"$R")
  $TCP first-byte 127.0.0.1 "$SP" 60 >/dev/null; t1=$(now)
  S+=("$(python3 -c "print($t1-$t0)")"); delete_instance "$ID"
  t0=$(now)
  DIRECT=$(docker run -d stratus-test/busybox:latest httpd -f -p 80 -h /www)
  $TCP first-byte "$(ip_of "$DIRECT")" 80 60 >/dev/null; t1=$(now)
  D+=("$(python3 -c "print($t1-$t0)")"); docker rm -f "$DIRECT" >/dev/null; DIRECT=""
done
SB=$(printf '%s\n' "${S[@]}" | sort -n | head -1); DB=$(printf '%s\n' "${D[@]}" | sort -n | head -1)
printf '  %-52s %7.3f s\n' "POST /api/v1/sandbox -> first byte via the mapping" "$SB"
printf '  %-52s %7.3f s\n' "docker run -d -> first byte from the container IP" "$DB"
printf '  ratio %s (target <= 1.5)\n' "$(ratio "$SB" "$DB")"

SINK='services:
  sink:
    image: stratus-test/busybox:latest
    command: ["tcpd", "sink", "9000"]
    ports: ["9000:9000"]
  echo:
    image: stratus-test/busybox:latest
    command: ["tcpd", "echo", "7"]
    ports: ["7:7"]'
R=$(sandbox "$SINK" '[{"name":"sink","computerPort":9000},{"name":"echo","computerPort":7}]')
ID=$(jq_py 'd["data"]["instanceId"]' <<<"$R")
SINKP=$(jq_py '[m for m in d["data"]["networkMappings"] if m["computerPort"]==9000][0]["serverPort"]' <<<"$R")
ECHOP=$(jq_py '[m for m in d["data"]["networkMappings"] if m["computerPort"]==7][0]["serverPort"]' <<<"$R")
wait_running "$ID"
SINKIP=$(ip_of "stratus-$ID-sink"); ECHOIP=$(ip_of "stratus-$ID-echo")

MODE=userspace
# Gateway tables are named after the server's id (ip stratus_<id>_<n>), never its pid.
nft list tables ip 2>/dev/null | grep -q "table ip stratus_" && MODE="kernel (nftables DNAT)"
echo "== 2. ${MIB} MiB streamed into a service (best of $RUNS; gateway forwarding: $MODE)"
G=(); X=()
for _ in $(seq "$RUNS"); do
  X+=("$($TCP stream "$SINKIP" 9000 "$MIB")")
  G+=("$($TCP stream 127.0.0.1 "$SINKP" "$MIB")")
done
GB=$(printf '%s\n' "${G[@]}" | sort -n | tail -1); XB=$(printf '%s\n' "${X[@]}" | sort -n | tail -1)
printf '  %-52s %7s MiB/s\n' "through the mapping (127.0.0.1:$SINKP)" "$GB"
printf '  %-52s %7s MiB/s\n' "straight to the container ($SINKIP:9000)" "$XB"
printf '  ratio %s (target >= 0.8)\n' "$(ratio "$GB" "$XB")"

echo "== 3. 200 concurrent connections through one mapping, 1 MiB echoed each"
read -r SECS ERR < <($TCP echo 127.0.0.1 "$ECHOP" 200 1)
read -r DSECS DERR < <($TCP echo "$ECHOIP" 7 200 1)
printf '  %-52s %7s s, %s errors\n' "through the mapping" "$SECS" "$ERR"
printf '  %-52s %7s s, %s errors\n' "straight to the container" "$DSECS" "$DERR"
delete_instance "$ID"
