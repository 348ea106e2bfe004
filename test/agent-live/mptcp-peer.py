#!/usr/bin/env python3
"""MPTCP peers of the live agent tests, run inside the test namespaces (IPPROTO_MPTCP sockets).

They count the application bytes they really moved and print the kernel's own view of the MPTCP
connection (MPTCP_INFO) and of each live subflow (TCP_INFO from MPTCP_TCPINFO, addresses from
MPTCP_SUBFLOW_ADDRS, the kernel's subflow id from MPTCP_FULL_INFO) as JSON lines: the ground
truth the exported profiles are compared with.

  server ADDR PORT REPLY [--expect N] [--tcp]
                          listen on every address of ADDR's family, accept one connection, read to EOF, then reply REPLY bytes (or
                          after the first N bytes); print MPTCP_INFO and subflows ("done");
                          close (--tcp: a plain TCP server, the client falls back)
  client ADDR PORT SEND REPLY [--chunk C] [--interval MS] [--gate]
                          connect, print "connected" (with MPTCP_INFO); with --gate wait for a
                          stdin line; send SEND bytes in CHUNKs every INTERVAL ms (a stdin
                          line at any time is not needed); read REPLY bytes, wait until the
                          connection level acknowledged everything, print "done"; wait for a
                          stdin line; close, print "closed"
  many-server ADDR PORT N  accept N connections, each in a thread: read to EOF, reply 100
                          bytes, close; print "done" with the bytes received per client port
  many-client ADDR PORT N SEND [--pause MS]
                          open N connections at once (threads), each: [wait MS,] send SEND bytes,
                          half-close, read to EOF, close; print "done" with each local port
Every phase line of server and client carries "mptcp" (MPTCP_INFO) and "subflows" (one object
per live subflow).
"""
import argparse
import json
import socket
import struct
import sys
import threading
import time

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_TCPINFO = 2
MPTCP_SUBFLOW_ADDRS = 3
MPTCP_FULL_INFO = 4

# struct mptcp_info (include/uapi/linux/mptcp.h).
MPTCP_FIELDS = {
    "subflows": (0, "B"),
    "add_addr_signal": (1, "B"),
    "add_addr_accepted": (2, "B"),
    "flags": (8, "I"),
    "token": (12, "I"),
    "write_seq": (16, "Q"),
    "snd_una": (24, "Q"),
    "rcv_nxt": (32, "Q"),
    "retransmits": (44, "I"),
    "bytes_retrans": (48, "Q"),
    "bytes_sent": (56, "Q"),
    "bytes_received": (64, "Q"),
    "bytes_acked": (72, "Q"),
    "subflows_total": (80, "B"),
}

# struct tcp_info (include/uapi/linux/tcp.h).
TCP_FIELDS = {
    "state": (0, "B"),
    "unacked": (24, "I"),
    "total_retrans": (100, "I"),
    "bytes_acked": (120, "Q"),
    "bytes_received": (128, "Q"),
    "bytes_sent": (200, "Q"),
    "bytes_retrans": (208, "Q"),
    "rcv_ooopack": (224, "I"),
    "total_rto": (240, "H"),
}
TCP_INFO_SIZE = 248
# struct mptcp_subflow_addrs: two __kernel_sockaddr_storage (128 bytes each).
ADDRS_SIZE = 256


def unpack(raw, fields):
    out = {}
    for name, (off, fmt) in fields.items():
        size = struct.calcsize(fmt)
        out[name] = struct.unpack_from("<" + fmt, raw, off)[0] if off + size <= len(raw) else None
    return out


def mptcp_info(sock):
    return unpack(sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 96), MPTCP_FIELDS)


def subflow_data(sock, opt, elem, count=8):
    buf = bytearray(struct.pack("<IIII", 16, 0, 0, elem) + bytes(elem * count))
    # Python's getsockopt cannot pass input bytes; use ctypes for the in/out buffer.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
    optlen = ctypes.c_uint32(len(buf))
    if libc.getsockopt(sock.fileno(), SOL_MPTCP, opt, cbuf, ctypes.byref(optlen)) != 0:
        return []
    _, num, _, size_user = struct.unpack_from("<IIII", buf, 0)
    return [bytes(buf[16 + i * size_user: 16 + (i + 1) * size_user]) for i in range(min(num, count))]


def port_of(ss):
    family = struct.unpack_from("<H", ss, 0)[0]
    port = struct.unpack_from(">H", ss, 2)[0]
    if family == socket.AF_INET:
        addr = socket.inet_ntop(socket.AF_INET, ss[4:8])
    elif family == socket.AF_INET6:
        addr = socket.inet_ntop(socket.AF_INET6, ss[8:24])
    else:
        addr = None
    return addr, port


def subflow_ids(sock, count=8):
    """The kernel's id of each subflow by (local, remote) port (MPTCP_FULL_INFO)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    # struct mptcp_subflow_info: __u32 id, 4 bytes of padding, struct mptcp_subflow_addrs.
    sf_size = 8 + ADDRS_SIZE
    sfbuf = ctypes.create_string_buffer(sf_size * count)
    head = struct.pack("<IIIIII", 0, 0, 0, sf_size, 0, count)
    full = bytearray(head + struct.pack("<QQ", ctypes.addressof(sfbuf), 0) + bytes(96))
    cbuf = (ctypes.c_char * len(full)).from_buffer(full)
    optlen = ctypes.c_uint32(len(full))
    if libc.getsockopt(sock.fileno(), SOL_MPTCP, MPTCP_FULL_INFO, cbuf, ctypes.byref(optlen)) != 0:
        return {}
    num = struct.unpack_from("<I", full, 16)[0]
    raw = sfbuf.raw
    ids = {}
    for i in range(min(num, count)):
        rec = raw[i * sf_size:(i + 1) * sf_size]
        ports = (port_of(rec[8:136])[1], port_of(rec[136:264])[1])
        ids[ports] = struct.unpack_from("<I", rec, 0)[0]
    return ids


def subflows(sock):
    infos = subflow_data(sock, MPTCP_TCPINFO, TCP_INFO_SIZE)
    addrs = subflow_data(sock, MPTCP_SUBFLOW_ADDRS, ADDRS_SIZE)
    ids = subflow_ids(sock)
    out = []
    for i, raw in enumerate(infos):
        sf = unpack(raw, TCP_FIELDS)
        if i < len(addrs):
            la, lp = port_of(addrs[i][0:128])
            ra, rp = port_of(addrs[i][128:256])
            sf.update({"local_address": la, "local_port": lp, "remote_address": ra, "remote_port": rp})
            sf["id"] = ids.get((lp, rp))
        out.append(sf)
    return out


def say(sock, phase, **extra):
    obj = {"phase": phase}
    if sock is not None and sock.proto == IPPROTO_MPTCP:
        try:
            obj["mptcp"] = mptcp_info(sock)
            obj["subflows"] = subflows(sock)
        except OSError as e:
            # Fallen back to TCP (the peer has no MPTCP): no MPTCP_INFO.
            obj["info_error"] = str(e)
    obj.update(extra)
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def wait_acked(sock, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            i = mptcp_info(sock)
        except OSError:
            return  # fallen back to TCP: no MPTCP_INFO
        if i["snd_una"] == i["write_seq"]:
            return
        time.sleep(0.01)


# SO_RCVBUFFORCE (as root) sets the buffer past net.core.rmem_max, which caps SO_RCVBUF (4 MiB
# here): a buffer meant to hold a whole transfer must really hold it.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def set_rcvbuf(sock, size):
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def server(a):
    s = socket.socket(family(a.addr), socket.SOCK_STREAM, 0 if a.tcp else IPPROTO_MPTCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.rcvbuf:
        set_rcvbuf(s, a.rcvbuf)
    # Joins come to the server's other addresses: listen on all of them.
    s.bind(("::" if family(a.addr) == socket.AF_INET6 else "0.0.0.0", a.port))
    s.listen(16)
    say(None, "listening")
    conn, peer = s.accept()
    if a.rcvbuf:
        set_rcvbuf(conn, a.rcvbuf)
    # Let the data pile up in the kernel first: no recv holds the socket while it arrives.
    time.sleep(a.read_after)
    got = 0
    sent = 0
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        got += len(data)
        if a.expect and got >= a.expect and not sent:
            conn.sendall(b"r" * a.reply)
            sent = a.reply
    if not sent and a.reply:
        conn.sendall(b"r" * a.reply)
        sent = a.reply
    wait_acked(conn, 30)
    say(conn, "done", received=got, sent=sent, local_port=conn.getsockname()[1], remote_port=peer[1])
    conn.close()
    s.close()


def client(a):
    c = socket.socket(family(a.addr), socket.SOCK_STREAM, IPPROTO_MPTCP)
    c.settimeout(120)
    c.connect((a.addr, a.port))
    say(c, "connected", local_port=c.getsockname()[1])
    if a.gate:
        sys.stdin.readline()
    chunk = a.chunk or a.send or 1
    sent = 0
    last_report = time.time()
    while sent < a.send:
        n = min(chunk, a.send - sent)
        c.sendall(b"s" * n)
        sent += n
        if a.interval:
            time.sleep(a.interval / 1000)
        if time.time() - last_report > 0.5:
            last_report = time.time()
            say(c, "progress", sent=sent)
    c.shutdown(socket.SHUT_WR)
    got = 0
    while True:
        data = c.recv(1 << 20)
        if not data:
            break
        got += len(data)
    wait_acked(c)
    say(c, "done", sent=sent, received=got, local_port=c.getsockname()[1])
    sys.stdin.readline()
    c.close()
    say(None, "closed")


def many_server(a):
    s = socket.socket(family(a.addr), socket.SOCK_STREAM, IPPROTO_MPTCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", a.port))
    s.listen(a.n)
    say(None, "listening")
    received = {}
    lock = threading.Lock()

    def serve(conn, peer):
        got = 0
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            got += len(data)
        conn.sendall(b"r" * 100)
        conn.close()
        with lock:
            received[peer[1]] = got

    threads = []
    for _ in range(a.n):
        conn, peer = s.accept()
        t = threading.Thread(target=serve, args=(conn, peer))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    say(None, "done", received=received)
    s.close()


def many_client(a):
    ports = {}
    errors = []
    lock = threading.Lock()

    def run():
        try:
            c = socket.socket(family(a.addr), socket.SOCK_STREAM, IPPROTO_MPTCP)
            c.settimeout(60)
            c.connect((a.addr, a.port))
            # Time for the path manager's join before the data.
            time.sleep(a.pause / 1000)
            c.sendall(b"s" * a.send)
            c.shutdown(socket.SHUT_WR)
            got = 0
            while True:
                data = c.recv(65536)
                if not data:
                    break
                got += len(data)
            port = c.getsockname()[1]
            c.close()
            with lock:
                ports[port] = got
        except OSError as e:
            with lock:
                errors.append(str(e))

    threads = [threading.Thread(target=run) for _ in range(a.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    say(None, "done", ports=ports, errors=errors)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("addr")
    s.add_argument("port", type=int)
    s.add_argument("reply", type=int)
    s.add_argument("--expect", type=int, default=0)
    s.add_argument("--tcp", action="store_true")
    s.add_argument("--rcvbuf", type=int, default=0)
    s.add_argument("--read-after", type=float, default=0)
    c = sub.add_parser("client")
    c.add_argument("addr")
    c.add_argument("port", type=int)
    c.add_argument("send", type=int)
    c.add_argument("reply", type=int)
    c.add_argument("--chunk", type=int, default=0)
    c.add_argument("--interval", type=float, default=0)
    c.add_argument("--gate", action="store_true")
    ms = sub.add_parser("many-server")
    ms.add_argument("addr")
    ms.add_argument("port", type=int)
    ms.add_argument("n", type=int)
    mc = sub.add_parser("many-client")
    mc.add_argument("addr")
    mc.add_argument("port", type=int)
    mc.add_argument("n", type=int)
    mc.add_argument("send", type=int)
    mc.add_argument("--pause", type=float, default=0)
    a = p.parse_args()
    modes = {"server": server, "client": client, "many-server": many_server, "many-client": many_client}
    modes[a.mode](a)


if __name__ == "__main__":
    main()
