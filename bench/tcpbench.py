#!/usr/bin/env python3
"""TCP measurements for bench/compute.sh (stdlib only).

  tcpbench.py first-byte HOST PORT TIMEOUT      seconds until an HTTP GET returns a first byte
  tcpbench.py stream HOST PORT MIB              MiB/s sending MIB MiB, until the peer closes
  tcpbench.py echo HOST PORT CONNS MIB          CONNS concurrent connections each echoing MIB MiB;
                                                prints "<seconds> <errors>"
"""
import asyncio
import os
import socket
import sys
import time


def first_byte(host, port, timeout):
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                if s.recv(1):
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.005)
    raise SystemExit(f"no first byte from {host}:{port} within {timeout} s")


def stream(host, port, mib):
    buf = os.urandom(1 << 20)
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        start = time.monotonic()
        for _ in range(mib):
            s.sendall(buf)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        return mib / (time.monotonic() - start)


async def echo_one(host, port, data):
    r, w = await asyncio.open_connection(host, port)
    async def send():
        w.write(data)
        await w.drain()
        w.write_eof()
    sender = asyncio.create_task(send())
    got = await r.readexactly(len(data))
    await sender
    w.close()
    return got == data


async def echo(host, port, conns, mib):
    data = os.urandom(mib << 20)
    start = time.monotonic()
    results = await asyncio.gather(*(echo_one(host, port, data) for _ in range(conns)), return_exceptions=True)
    errors = sum(1 for r in results if r is not True)
    return time.monotonic() - start, errors


def main():
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "first-byte":
        print(f"{first_byte(host, port, float(sys.argv[4])):.3f}")
    elif cmd == "stream":
        print(f"{stream(host, port, int(sys.argv[4])):.0f}")
    elif cmd == "echo":
        secs, errors = asyncio.run(echo(host, port, int(sys.argv[4]), int(sys.argv[5])))
        print(f"{secs:.2f} {errors}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
