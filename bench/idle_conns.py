#!/usr/bin/env python3
"""Opens N keep-alive connections to a server, one request each, then reads the server's memory.

    idle_conns.py HOST:PORT PID [--connections 1000] [--path /v2/]

Every connection sends one HTTP/1.1 request (so the server has accepted it and set up its
per-connection state) and then idles. With all of them open, the server's VmRSS and VmHWM are read
from /proc/PID/status; then one more request on every connection checks they were still open.
Prints one line: RSS (anonymous and file-backed), peak RSS, and the anonymous memory added per
connection.
"""

import argparse
import socket
import time


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                out[k] = int(v.split()[0])
    return out


def read_response(s):
    """Reads one response with an empty or Content-Length body; returns the status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return int(head.split(b" ", 2)[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("pid", type=int)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--path", default="/v2/")
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    req = f"GET {a.path} HTTP/1.1\r\nHost: {a.addr}\r\n\r\n".encode()

    before = status(a.pid)
    socks = []
    started = time.monotonic()
    for _ in range(a.connections):
        s = socket.create_connection((host, int(port)))
        s.sendall(req)
        if read_response(s) >= 400:
            raise SystemExit("unexpected error status")
        socks.append(s)
    opened = time.monotonic() - started
    time.sleep(0.5)
    during = status(a.pid)
    alive = 0
    for s in socks:
        try:
            s.sendall(req)
            read_response(s)
            alive += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    mb = lambda kib: f"{kib / 1024:.1f}"
    print(
        f"{a.connections} connections ({alive} still open after): VmRSS {mb(during['VmRSS'])} MB "
        f"(anon {mb(during['RssAnon'])}, file {mb(during['RssFile'])}), "
        f"VmHWM {mb(during['VmHWM'])} MB; "
        f"+{(during['RssAnon'] - before['RssAnon']) / max(a.connections, 1):.1f} KiB anon per connection"
    )


if __name__ == "__main__":
    main()
