#!/usr/bin/env python3
"""A TCP client or server for the live probe tests, run inside a test namespace.

It moves a known number of bytes each way and prints the kernel's own view of the connection
(TCP_INFO) as JSON lines: the ground truth the probes' events are compared with.

  server ADDR PORT EXPECT REPLY   accept one connection, read EXPECT bytes, send REPLY bytes,
                                  read to EOF, print TCP_INFO, close
  client ADDR PORT SEND EXPECT [CHUNK INTERVAL_MS]
                                  connect, send SEND bytes (in CHUNKs every INTERVAL_MS), read
                                  EXPECT bytes, wait until all is acknowledged, print TCP_INFO,
                                  wait for a line on stdin, close
  mptcp-server ..., mptcp-client ...
                                  the same over MPTCP (IPPROTO_MPTCP): the probes see its subflows
"""
import json
import socket
import struct
import sys
import time

# Offsets in struct tcp_info (include/uapi/linux/tcp.h).
FIELDS = {
    "state": (0, "B"),
    "ca_state": (1, "B"),
    "unacked": (24, "I"),
    "rtt": (68, "I"),
    "total_retrans": (100, "I"),
    "bytes_acked": (120, "Q"),
    "bytes_received": (128, "Q"),
    "segs_out": (136, "I"),
    "segs_in": (140, "I"),
    "data_segs_in": (152, "I"),
    "data_segs_out": (156, "I"),
    "delivered": (192, "I"),
    "bytes_sent": (200, "Q"),
    "bytes_retrans": (208, "Q"),
    "dsack_dups": (216, "I"),
    "reord_seen": (220, "I"),
    "rcv_ooopack": (224, "I"),
    "total_rto": (240, "H"),
    "total_rto_recoveries": (242, "H"),
}


def tcp_info(sock):
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    out = {}
    for name, (off, fmt) in FIELDS.items():
        size = struct.calcsize(fmt)
        out[name] = struct.unpack_from("<" + fmt, raw, off)[0] if off + size <= len(raw) else None
    return out


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_exactly(conn, n):
    got = 0
    while got < n:
        data = conn.recv(min(1 << 20, n - got))
        if not data:
            break
        got += len(data)
    return got


IPPROTO_MPTCP = 262
PROTO = 0


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def server(addr, port, expect, reply):
    s = socket.socket(family(addr), socket.SOCK_STREAM, PROTO)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    say({"phase": "listening", "port": s.getsockname()[1]})
    conn, peer = s.accept()
    got = read_exactly(conn, expect)
    conn.sendall(b"r" * reply)
    while conn.recv(65536):
        pass
    info = tcp_info(conn)
    info.update({"phase": "done", "received": got, "local_port": conn.getsockname()[1], "remote_port": peer[1]})
    say(info)
    conn.close()
    s.close()


def client(addr, port, send, expect, chunk, interval_ms):
    c = socket.socket(family(addr), socket.SOCK_STREAM, PROTO)
    c.settimeout(30)
    c.connect((addr, port))
    say({"phase": "connected", "local_port": c.getsockname()[1]})
    chunk = chunk or send or 1
    sent = 0
    while sent < send:
        n = min(chunk, send - sent)
        c.sendall(b"s" * n)
        sent += n
        if interval_ms:
            time.sleep(interval_ms / 1000)
    got = read_exactly(c, expect)
    deadline = time.time() + 20
    while tcp_info(c)["unacked"] and time.time() < deadline:
        time.sleep(0.01)
    info = tcp_info(c)
    info.update({"phase": "done", "sent": sent, "received": got, "local_port": c.getsockname()[1]})
    say(info)
    sys.stdin.readline()
    c.close()
    say({"phase": "closed"})


if __name__ == "__main__":
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode.startswith("mptcp-"):
        PROTO = IPPROTO_MPTCP
        mode = mode[len("mptcp-"):]
    if mode == "server":
        server(addr, port, int(sys.argv[4]), int(sys.argv[5]))
    else:
        extra = [int(x) for x in sys.argv[6:8]] + [0, 0]
        client(addr, port, int(sys.argv[4]), int(sys.argv[5]), extra[0], extra[1])
