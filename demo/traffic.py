#!/usr/bin/env python3
"""Traffic of `kpiflow demo`: a server answering requests on every address of its namespace, and a
client that opens connections to a list of destinations for a while, printing JSON lines.

Each connection sends an 8-byte header (request and response sizes, big-endian u32), the request
bytes, reads the response and closes: short web-like exchanges, or a bulk upload; a destination
with "mptcp": true is reached over an IPPROTO_MPTCP socket.

    traffic.py server --port 443 [--mptcp-port 8443]
    traffic.py client --duration 30 --workers 4 --plan '[{"name": "web", "addr": "192.0.2.2",
        "port": 443, "weight": 5, "request": 600, "response": 20000}, ...]'

Standard library only.
"""

import argparse
import json
import random
import socket
import struct
import sys
import threading
import time

HEADER = struct.Struct("!II")


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def recv_exact(sock, n):
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(min(1 << 20, n - len(got)))
        if not chunk:
            raise ConnectionError(f"peer closed after {len(got)} of {n} bytes")
        got += chunk
    return bytes(got)


def serve_one(conn):
    try:
        with conn:
            request, response = HEADER.unpack(recv_exact(conn, HEADER.size))
            left = request
            while left > 0:
                chunk = conn.recv(min(1 << 20, left))
                if not chunk:
                    return
                left -= len(chunk)
            conn.sendall(b"r" * response)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
    except OSError:
        pass


IPPROTO_MPTCP = 262


def listen(port, proto=0):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(512)
    return s


def accept_loop(s):
    while True:
        conn, _ = s.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def server(a):
    listeners = [listen(a.port)]
    if a.mptcp_port:
        listeners.append(listen(a.mptcp_port, IPPROTO_MPTCP))
    say({"phase": "listening", "port": a.port, "mptcpPort": a.mptcp_port})
    for s in listeners[1:]:
        threading.Thread(target=accept_loop, args=(s,), daemon=True).start()
    accept_loop(listeners[0])


def exchange(dest):
    family = socket.AF_INET6 if ":" in dest["addr"] else socket.AF_INET
    c = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP if dest.get("mptcp") else 0)
    c.settimeout(20)
    try:
        c.connect((dest["addr"], dest["port"]))
        c.sendall(HEADER.pack(dest["request"], dest["response"]))
        left = dest["request"]
        block = b"q" * 65536
        while left > 0:
            n = min(left, len(block))
            c.sendall(block[:n])
            left -= n
        recv_exact(c, dest["response"])
    finally:
        c.close()


def client(a):
    plan = json.loads(a.plan)
    if not plan:
        print("traffic.py: --plan holds no destination", file=sys.stderr)
        return 2
    weights = [d.get("weight", 1) for d in plan]
    end = time.time() + a.duration
    lock = threading.Lock()
    counts = {d["name"]: {"ok": 0, "errors": 0} for d in plan}

    def worker(seed):
        rnd = random.Random(seed)
        while time.time() < end:
            dest = rnd.choices(plan, weights)[0]
            try:
                exchange(dest)
                key = "ok"
            except OSError:
                key = "errors"
            with lock:
                counts[dest["name"]][key] += 1
            time.sleep(rnd.uniform(0, a.pause))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.workers)]
    for t in threads:
        t.start()
    started = time.time()
    while any(t.is_alive() for t in threads):
        time.sleep(1)
        with lock:
            say({"phase": "progress", "seconds": round(time.time() - started), "counts": counts})
    say({"phase": "done", "counts": counts})
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, default=443)
    s.add_argument("--mptcp-port", type=int, default=0, help="also listen with IPPROTO_MPTCP here")
    c = sub.add_parser("client")
    c.add_argument("--plan", required=True, help="JSON list of destinations")
    c.add_argument("--duration", type=float, default=30)
    c.add_argument("--workers", type=int, default=4)
    c.add_argument("--pause", type=float, default=0.2, help="longest pause between connections, s")
    a = ap.parse_args()
    return server(a) if a.mode == "server" else client(a)


if __name__ == "__main__":
    sys.exit(main())
