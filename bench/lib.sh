# Shared helpers for the benchmark scripts (sourced). Everything runs on loopback.
set -euo pipefail
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$BENCH_ROOT/bench/out}
mkdir -p "$OUT"
# BENCH_BIN=<a stratus binary> benchmarks that binary (e.g. a build of an older commit, for
# before/after figures) instead of building this checkout's release binary.
BIN=${BENCH_BIN:-$BENCH_ROOT/target/release/stratus}

need() { command -v "$1" >/dev/null || { echo "installing $2"; apt-get install -y -qq "$2" >/dev/null; }; }

build_release() {
  [ -n "${BENCH_BIN:-}" ] && return 0
  (cd "$BENCH_ROOT" && cargo build --release -q -p stratus)
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# start_stratus DATA_DIR PORT [ENV=VAL…] — starts the release server, waits for /healthz.
start_stratus() {
  local dir=$1 port=$2; shift 2
  env "$@" "$BIN" serve --data-dir "$dir" --listen "127.0.0.1:$port" >"$OUT/stratus-$port.log" 2>&1 &
  STRATUS_PID=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "stratus did not start; see $OUT/stratus-$port.log" >&2; exit 1
}

# start_nginx PORT CONFIG_BODY — nginx with the given `server` block contents.
start_nginx() {
  local port=$1 body=$2
  local dir; dir=$(mktemp -d)
  cat >"$dir/nginx.conf" <<NGX
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  server { listen 127.0.0.1:$port; $body }
}
NGX
  nginx -c "$dir/nginx.conf"
  NGINX_PIDFILE=$dir/nginx.pid
  sleep 0.3
}

stop_nginx() { [ -n "${NGINX_PIDFILE:-}" ] && kill "$(cat "$NGINX_PIDFILE")" 2>/dev/null || true; }

# wrk_rps OUTPUT_FILE — requests/s from a wrk report.
wrk_rps() { awk '/Requests\/sec:/ {print $2}' "$1"; }
# wrk_p99_ms OUTPUT_FILE — 99th percentile latency in ms from `wrk --latency`.
wrk_p99_ms() {
  awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$1"
}
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
