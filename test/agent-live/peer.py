#!/usr/bin/env python3
"""TCP peers of the live agent tests, run inside the test namespaces.

They count the application bytes they really moved and print the kernel's own view of each
connection (TCP_INFO) as JSON lines: the ground truth the exported profiles are compared with.

  server ADDR PORT REPLY          accept one connection, read to EOF (or a reset), then
                                  [after the first EXPECT bytes, see --expect] send REPLY bytes;
                                  print TCP_INFO ("done"), close
  client ADDR PORT SEND REPLY     connect, [--gate: wait for a stdin line], send SEND bytes in
                                  CHUNKs every INTERVAL ms, read REPLY bytes, wait until all is
                                  acknowledged, print TCP_INFO ("done"), wait for a stdin line,
                                  close (--abort: with SO_LINGER 0, i.e. a reset;
                                  --abort-after N: that reset right after N bytes were sent)
  connect-refused ADDR PORT       connect to a closed port, print the error
  many-server ADDR PORT N         accept N connections at once, each: read to EOF, reply 100
                                  bytes, close; print the ports seen ("done")
  many-client ADDR PORT N         open N connections at once (non-blocking), each: send 100
                                  bytes, half-close, read to EOF, close; print its ports
"""
import argparse
import errno
import json
import selectors
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


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def wait_acked(sock, seconds=30):
    deadline = time.time() + seconds
    while tcp_info(sock)["unacked"] and time.time() < deadline:
        time.sleep(0.01)


def server(a):
    s = socket.socket(family(a.addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.addr, a.port))
    s.listen(16)
    say({"phase": "listening"})
    conn, peer = s.accept()
    got = 0
    sent = 0
    error = None
    try:
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            got += len(data)
            if a.expect and got >= a.expect and not sent:
                conn.sendall(b"r" * a.reply)
                sent = a.reply
        if not a.expect:
            conn.sendall(b"r" * a.reply)
            sent = a.reply
        wait_acked(conn, 10)
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
    info = tcp_info(conn)
    info.update({"phase": "done", "received": got, "sent": sent, "error": error,
                 "local_port": conn.getsockname()[1], "remote_port": peer[1]})
    say(info)
    conn.close()
    s.close()


def client(a):
    c = socket.socket(family(a.addr), socket.SOCK_STREAM)
    c.settimeout(60)
    c.connect((a.addr, a.port))
    info = tcp_info(c)
    info.update({"phase": "connected", "local_port": c.getsockname()[1]})
    say(info)
    if a.gate:
        c.sendall(b"p" * a.gate)
        wait_acked(c)
        info = tcp_info(c)
        info.update({"phase": "gated", "sent": a.gate})
        say(info)
        sys.stdin.readline()
    chunk = a.chunk or a.send or 1
    sent = 0
    while sent < a.send:
        n = min(chunk, a.send - sent)
        c.sendall(b"s" * n)
        sent += n
        if a.interval:
            time.sleep(a.interval / 1000)
        if a.abort_after and sent >= a.abort_after:
            # Mid-transfer abort: SO_LINGER 0 makes close() send a reset at once.
            info = tcp_info(c)
            info.update({"phase": "aborted", "sent": sent, "local_port": c.getsockname()[1]})
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            say(info)
            return
    got = 0
    while got < a.reply:
        data = c.recv(min(1 << 20, a.reply - got))
        if not data:
            break
        got += len(data)
    wait_acked(c)
    info = tcp_info(c)
    info.update({"phase": "done", "sent": sent + a.gate, "received": got, "local_port": c.getsockname()[1]})
    say(info)
    sys.stdin.readline()
    if a.abort:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    say({"phase": "closed"})


def connect_refused(a):
    c = socket.socket(family(a.addr), socket.SOCK_STREAM)
    c.settimeout(10)
    c.bind(("", 0))
    port = c.getsockname()[1]
    try:
        c.connect((a.addr, a.port))
        error = None
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
    say({"phase": "done", "error": error, "local_port": port})
    c.close()


def many_server(a):
    s = socket.socket(family(a.addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.addr, a.port))
    s.listen(4096)
    s.setblocking(False)
    say({"phase": "listening"})
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ, None)
    accepted = 0
    closed = 0
    ports = []
    while closed < a.n:
        for key, _ in sel.select(timeout=30):
            if key.data is None:
                while accepted < a.n:
                    try:
                        conn, peer = s.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    accepted += 1
                    ports.append(peer[1])
                    sel.register(conn, selectors.EVENT_READ, [0])
                continue
            conn = key.fileobj
            try:
                data = conn.recv(65536)
            except ConnectionError:
                data = b""
            if data:
                key.data[0] += len(data)
                continue
            sel.unregister(conn)
            try:
                conn.setblocking(True)
                conn.sendall(b"r" * 100)
            except OSError:
                pass
            conn.close()
            closed += 1
    say({"phase": "done", "accepted": accepted, "ports": ports})
    s.close()


def many_client(a):
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(a.n):
        c = socket.socket(family(a.addr), socket.SOCK_STREAM)
        c.setblocking(False)
        c.connect_ex((a.addr, a.port))
        socks.append(c)
        sel.register(c, selectors.EVENT_WRITE, [0, 0])
    ports = [c.getsockname()[1] for c in socks]
    say({"phase": "connecting", "ports": ports})
    done = 0
    replies = 0
    errors = 0
    while done < a.n:
        events = sel.select(timeout=30)
        if not events:
            break
        for key, mask in events:
            c = key.fileobj
            if mask & selectors.EVENT_WRITE:
                err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    errors += 1
                    sel.unregister(c)
                    c.close()
                    done += 1
                    continue
                c.send(b"s" * 100)
                c.shutdown(socket.SHUT_WR)
                sel.modify(c, selectors.EVENT_READ, key.data)
                continue
            data = c.recv(65536)
            if data:
                key.data[1] += len(data)
                continue
            replies += key.data[1] == 100
            sel.unregister(c)
            c.close()
            done += 1
    say({"phase": "done", "done": done, "replies": replies, "errors": errors})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("rest", nargs="*", type=int)
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--chunk", type=int, default=0)
    p.add_argument("--interval", type=int, default=0)
    p.add_argument("--gate", type=int, default=0)
    p.add_argument("--abort", action="store_true")
    p.add_argument("--abort-after", type=int, default=0)
    a = p.parse_args()
    if a.mode == "server":
        a.reply = a.rest[0]
        server(a)
    elif a.mode == "client":
        a.send, a.reply = a.rest[0], a.rest[1]
        client(a)
    elif a.mode == "connect-refused":
        connect_refused(a)
    elif a.mode == "many-server":
        a.n = a.rest[0]
        many_server(a)
    elif a.mode == "many-client":
        a.n = a.rest[0]
        many_client(a)
    else:
        sys.exit("unknown mode " + a.mode)
