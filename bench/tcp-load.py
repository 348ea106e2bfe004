#!/usr/bin/env python3
"""Workloads of the agent overhead benchmark (bench/agent-overhead.ts), run inside its namespaces.

Each prints JSON lines; the last one ("phase": "done") carries the CPU time the workload used,
from getrusage, so the benchmark charges each mode with the work of the peers themselves
(including the softirq network processing the kernel runs in their context).

  short-server ADDR PORT N SIZE   accept N connections one after the other: read SIZE bytes,
                                  answer SIZE bytes, read to EOF, close
  short-client ADDR PORT N SIZE   N times: connect, send SIZE bytes, read SIZE bytes, close
                                  (the client closes first: TIME_WAIT stays on its side)
  hold-server ADDR PORT N         accept N connections and keep them open until stdin closes
  hold-client ADDR PORT N RATE    open N connections (at most RATE a second), keep them open
                                  until stdin closes
  run CMD ARGS...                 run a command (e.g. iperf3), pass its output through as
                                  {"phase": "output"} lines, then report its CPU time
"""
import json
import resource
import socket
import subprocess
import sys
import time


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def read_exactly(conn, n):
    got = 0
    while got < n:
        data = conn.recv(n - got)
        if not data:
            break
        got += len(data)
    return got


def done(who, started, **extra):
    ru = resource.getrusage(who)
    say({"phase": "done", "seconds": time.monotonic() - started, "utime": ru.ru_utime,
         "stime": ru.ru_stime, "maxrss_kb": ru.ru_maxrss, **extra})


def allow_fds(n):
    # One descriptor per held connection. The hard limit may not be raised here (no
    # CAP_SYS_RESOURCE in this sandbox): the benchmark splits larger counts over processes.
    want = n + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if want > hard:
        sys.exit(f"{n} connections need {want} descriptors; the hard limit is {hard}")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def listen(addr, port):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(4096)
    say({"phase": "listening"})
    return s


def short_server(addr, port, n, size):
    s = listen(addr, port)
    started = time.monotonic()
    reply = b"r" * size
    for _ in range(n):
        conn, _peer = s.accept()
        read_exactly(conn, size)
        conn.sendall(reply)
        while conn.recv(4096):
            pass
        conn.close()
    done(resource.RUSAGE_SELF, started, connections=n)


def short_client(addr, port, n, size):
    payload = b"q" * size
    fam = family(addr)
    started = time.monotonic()
    for _ in range(n):
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.connect((addr, port))
        c.sendall(payload)
        read_exactly(c, size)
        c.close()
    done(resource.RUSAGE_SELF, started, connections=n)


def hold_server(addr, port, n):
    allow_fds(n)
    s = listen(addr, port)
    started = time.monotonic()
    held = [s.accept()[0] for _ in range(n)]
    say({"phase": "held", "connections": len(held)})
    sys.stdin.read()
    for c in held:
        c.close()
    done(resource.RUSAGE_SELF, started, connections=n)


def hold_client(addr, port, n, rate):
    allow_fds(n)
    fam = family(addr)
    started = time.monotonic()
    held = []
    for i in range(n):
        # Paced, so the agent's ring buffer never overflows while it learns the connections.
        ahead = i / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.connect((addr, port))
        held.append(c)
    say({"phase": "held", "connections": len(held), "seconds": time.monotonic() - started})
    sys.stdin.read()
    for c in held:
        c.close()
    done(resource.RUSAGE_SELF, started, connections=n)


def run(cmd):
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        say({"phase": "output", "line": line.rstrip("\n")})
    rc = proc.wait()
    done(resource.RUSAGE_CHILDREN, started, rc=rc)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "run":
        run(args)
    elif mode == "short-server":
        short_server(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "short-client":
        short_client(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "hold-server":
        hold_server(args[0], int(args[1]), int(args[2]))
    elif mode == "hold-client":
        hold_client(args[0], int(args[1]), int(args[2]), float(args[3]))
    else:
        sys.exit(f"unknown mode {mode}")
