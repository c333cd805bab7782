#!/usr/bin/env bash
# Starts a three-node Garage cluster on loopback for the scale benchmark: replication factor 3,
# three zones (z1, z2, z3) with one node each, every node with its own RPC, S3 and admin port
# and its own metadata and data directories under DIR. Creates a bucket (`stratus`) and a key
# allowed on it, waits until the bucket answers S3 requests, then prints environment lines
# (KEY=VALUE, no quoting needed) on stdout:
#   - STRATUS_STORAGE__TARGETS__{MEFS,IPFS}__* binding stratus's storage targets to the bucket,
#   - AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL for `aws`
#     (Debian's awscli may ignore AWS_ENDPOINT_URL: pass --endpoint-url "$GARAGE_ENDPOINT"),
#   - GARAGE_ENDPOINT (node 1's S3 API), GARAGE_ENDPOINTS (all three, comma separated),
#     GARAGE_BUCKET, GARAGE_CLUSTER_DIR.
# The same lines are kept in DIR/env. The binary is the one scripts/garage.sh builds (or
# $STRATUS_GARAGE); if that build is still running, this waits for it (up to 40 minutes) instead
# of starting a second one.
#
# usage: scripts/garage-cluster.sh [DIR]      # start (DIR: a fresh temp dir if not given)
#        scripts/garage-cluster.sh --stop DIR # stop the nodes and remove DIR
# e.g.   DIR=$(mktemp -d); scripts/garage-cluster.sh "$DIR" >"$DIR.env"; set -a; . "$DIR.env"; set +a
#        aws --endpoint-url "$GARAGE_ENDPOINT" s3 cp f "s3://$GARAGE_BUCKET/f"
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '== %s\n' "$*" >&2; }

BUCKET=stratus
REGION=garage
NODES=3

if [ "${1:-}" = "--stop" ]; then
  DIR=${2:?usage: scripts/garage-cluster.sh --stop DIR}
  [ -f "$DIR/garage-cluster" ] || { echo "$DIR is not a garage-cluster.sh directory" >&2; exit 1; }
  for pidfile in "$DIR"/node*/pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
  done
  for pidfile in "$DIR"/node*/pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$DIR"
  log "garage cluster in $DIR stopped"
  exit 0
fi

# The binary: given, built, or being built by scripts/garage.sh right now.
if [ -n "${STRATUS_GARAGE:-}" ]; then
  GARAGE=$STRATUS_GARAGE
else
  GARAGE=$(scripts/garage.sh --path)
  if [ ! -x "$GARAGE" ]; then
    if pgrep -f "cargo install .*garage --version" >/dev/null; then
      log "waiting for the running Garage build ($GARAGE)"
      for _ in $(seq 2400); do [ -x "$GARAGE" ] && break; sleep 1; done
      [ -x "$GARAGE" ] || { echo "the Garage build did not finish" >&2; exit 1; }
    else
      log "building Garage (once, several minutes)"
      GARAGE=$(scripts/garage.sh | tail -n 1)
    fi
  fi
fi

DIR=${1:-$(mktemp -d /tmp/garage-cluster.XXXXXX)}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
if [ -f "$DIR/garage-cluster" ]; then
  echo "$DIR already holds a cluster: stop it first (scripts/garage-cluster.sh --stop $DIR)" >&2
  exit 1
fi
touch "$DIR/garage-cluster"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
ENDPOINTS=()
for i in $(seq "$NODES"); do
  n="$DIR/node$i"
  mkdir -p "$n"
  rpc=$(free_port); s3=$(free_port); admin=$(free_port)
  echo "127.0.0.1:$rpc" >"$n/rpc_addr"
  ENDPOINTS+=("http://127.0.0.1:$s3")
  cat >"$n/garage.toml" <<EOF
metadata_dir = "$n/meta"
data_dir = "$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$SECRET"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
  # In a session of its own, so that it outlives this script and --stop ends exactly it.
  RUST_LOG=warn setsid "$GARAGE" -c "$n/garage.toml" server >"$n/garage.log" 2>&1 </dev/null &
  echo $! >"$n/pid"
done
log "garage nodes started in $DIR"

g() { local i=$1; shift; RUST_LOG=warn "$GARAGE" -c "$DIR/node$i/garage.toml" "$@"; }
wait_for() {
  local what=$1; shift
  for _ in $(seq 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "gave up waiting for $what" >&2
  tail -n 20 "$DIR"/node*/garage.log >&2
  exit 1
}
for i in $(seq "$NODES"); do wait_for "node $i" g "$i" status; done

IDS=()
for i in $(seq "$NODES"); do
  IDS+=("$(g "$i" node id -q | cut -d@ -f1)")
done
for i in $(seq 2 "$NODES"); do
  g 1 node connect "${IDS[$((i - 1))]}@$(cat "$DIR/node$i/rpc_addr")" >/dev/null
done
for i in $(seq "$NODES"); do
  g 1 layout assign -z "z$i" -c 1G "${IDS[$((i - 1))]}" >/dev/null
done
g 1 layout apply --version 1 >/dev/null
log "layout applied: $NODES nodes, zones z1..z$NODES, replication factor 3"

KEY=$(g 1 json-api CreateKey '{"name":"stratus"}')
KEY_ID=$(printf '%s' "$KEY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accessKeyId"])')
KEY_SECRET=$(printf '%s' "$KEY" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secretAccessKey"])')
g 1 bucket create "$BUCKET" >/dev/null
g 1 bucket allow --read --write --owner "$BUCKET" --key stratus >/dev/null

aws_ls() {
  AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$KEY_SECRET AWS_CONFIG_FILE=/dev/null \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    aws --endpoint-url "$1" --region "$REGION" s3api list-objects-v2 --bucket "$BUCKET" </dev/null
}
for e in "${ENDPOINTS[@]}"; do wait_for "the bucket at $e" aws_ls "$e"; done
log "bucket $BUCKET answers on ${ENDPOINTS[*]}"

{
  for t in MEFS IPFS; do
    p="STRATUS_STORAGE__TARGETS__${t}__"
    echo "${p}BACKEND=s3"
    echo "${p}BUCKET=$BUCKET"
    echo "${p}ENDPOINT=${ENDPOINTS[0]}"
    echo "${p}REGION=$REGION"
    echo "${p}ACCESS_KEY_ID=$KEY_ID"
    echo "${p}SECRET_ACCESS_KEY=$KEY_SECRET"
    echo "${p}ALLOW_HTTP=true"
  done
  echo "AWS_ACCESS_KEY_ID=$KEY_ID"
  echo "AWS_SECRET_ACCESS_KEY=$KEY_SECRET"
  echo "AWS_DEFAULT_REGION=$REGION"
  echo "AWS_ENDPOINT_URL=${ENDPOINTS[0]}"
  echo "GARAGE_ENDPOINT=${ENDPOINTS[0]}"
  echo "GARAGE_ENDPOINTS=$(IFS=,; echo "${ENDPOINTS[*]}")"
  echo "GARAGE_BUCKET=$BUCKET"
  echo "GARAGE_CLUSTER_DIR=$DIR"
} >"$DIR/env"
cat "$DIR/env"
