#!/usr/bin/env python3
"""Delays every packet routed through a TUN device by a fixed time: a high-RTT path on a kernel
without netem (no sch_netem, no sch_fq for EDT here). Run inside a network namespace; it opens
(creating if needed) the TUN device, prints one JSON line {"phase": "ready", ...} once reading, and
writes each packet back to the device `--delay-ms` after it arrived, in arrival order. The caller
routes the traffic to delay into the device and, with a policy rule for packets coming back out of
it (`ip rule add iif DEV lookup T`), on to the real next hop:

    ip netns exec A python3 demo/delay-tun.py --dev kfd0 --delay-ms 100 &
    ip -n A link set kfd0 up
    ip -n A route add 198.51.100.80/32 dev kfd0 src 192.0.2.1
    ip -n A route add 198.51.100.80/32 via 192.0.2.2 table 100
    ip -n A rule add iif kfd0 lookup 100
    ip netns exec A sysctl -w net.ipv4.ip_forward=1 net.ipv4.conf.kfd0.accept_local=1 \
        net.ipv4.conf.kfd0.rp_filter=0 net.ipv4.conf.all.rp_filter=0

Standard library only. SIGTERM or SIGINT stops it; the device goes with the process unless it was
made persistent beforehand.
"""

import argparse
import fcntl
import heapq
import json
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev", required=True, help="TUN device name (at most 15 characters)")
    ap.add_argument("--delay-ms", type=float, required=True, help="delay added to every packet, ms")
    args = ap.parse_args()
    if len(args.dev) > 15:
        print(f"delay-tun: --dev {args.dev} is longer than 15 characters", file=sys.stderr)
        return 2
    if args.delay_ms < 0:
        print(f"delay-tun: --delay-ms {args.delay_ms} is negative", file=sys.stderr)
        return 2
    fd = open_tun(args.dev)
    delay = args.delay_ms / 1000
    stop = False

    def on_signal(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # (due time, arrival number, packet): the number keeps arrival order among equal times.
    queue: list[tuple[float, int, bytes]] = []
    n = 0
    forwarded = 0
    print(json.dumps({"phase": "ready", "dev": args.dev, "delayMs": args.delay_ms}), flush=True)
    while not stop:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, pkt = heapq.heappop(queue)
            try:
                os.write(fd, pkt)
                forwarded += 1
            except OSError:
                pass  # device down or packet refused: dropped, as a router would
        timeout = max(0.0, queue[0][0] - now) if queue else 0.5
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        except InterruptedError:
            continue
        if ready:
            while True:
                try:
                    pkt = os.read(fd, 65535)
                except BlockingIOError:
                    break
                n += 1
                heapq.heappush(queue, (time.monotonic() + delay, n, pkt))
    print(json.dumps({"phase": "end", "received": n, "forwarded": forwarded}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
