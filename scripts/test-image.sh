#!/usr/bin/env bash
# Builds the local image the compute tests run: a rootfs holding Debian's static busybox (httpd,
# nc, sh …), tests/peers/tcpd.c (a concurrent echo/sink server) and tests/peers/rawprobe.c (a
# raw-frame probe for the isolation tests) compiled statically, imported with `docker import` (no
# registry needed). Rebuilt when missing or out of date.
set -euo pipefail
IMAGE=${1:-stratus-test/busybox:latest}
VERSION=3
have=$(docker image inspect -f '{{index .Config.Labels "io.stratus.test-image"}}' "$IMAGE" 2>/dev/null || true)
if [ "$have" = "$VERSION" ]; then exit 0; fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,tmp,www,data,proc,sys,dev}
cp /usr/bin/busybox "$root/bin/busybox"
for a in $(/usr/bin/busybox --list); do
  [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >> "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
echo 'nogroup:x:65534:' >> "$root/etc/group"
echo 'hello from stratus-test' > "$root/www/index.html"
chmod 1777 "$root/tmp"
gcc -static -O2 -o "$root/bin/tcpd" "$(dirname "$0")/../tests/peers/tcpd.c"
gcc -static -O2 -o "$root/bin/rawprobe" "$(dirname "$0")/../tests/peers/rawprobe.c"
tar -C "$root" -c . | docker import \
  -c 'ENV PATH=/bin:/sbin' -c 'CMD ["/bin/sh"]' -c "LABEL io.stratus.test-image=$VERSION" \
  - "$IMAGE" >/dev/null
echo "built $IMAGE"
