#!/usr/bin/env bash
# Starts dockerd in the background unless an engine already answers; waits until it does.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
command -v dockerd >/dev/null || { echo "dockerd is not installed (apt-get install docker.io)" >&2; exit 1; }
mkdir -p /var/log
nohup dockerd >/var/log/stratus-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "dockerd did not come up; see /var/log/stratus-dockerd.log" >&2
tail -20 /var/log/stratus-dockerd.log >&2 || true
exit 1
