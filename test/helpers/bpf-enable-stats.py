#!/usr/bin/env python3
"""Turns on the kernel's BPF run-time statistics (run_cnt, run_time_ns per program) while it runs.

bpf(BPF_ENABLE_STATS, BPF_STATS_RUN_TIME) returns a file descriptor that keeps the statistics on
until it is closed: the same switch as kernel.bpf_stats_enabled=1, but reference-counted, so
another process writing 0 to the sysctl (a test restoring its previous value) cannot turn them
off under us, and they go off by themselves when this process dies, however it dies.

Prints "enabled" once the descriptor is held, then waits for stdin to close.
"""
import ctypes
import os
import sys

SYS_BPF = {"x86_64": 321, "aarch64": 280}[os.uname().machine]
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0

libc = ctypes.CDLL(None, use_errno=True)
# union bpf_attr's enable_stats member is one __u32; the kernel wants the rest of attr zeroed.
attr = (ctypes.c_uint32 * 4)(BPF_STATS_RUN_TIME, 0, 0, 0)
fd = libc.syscall(SYS_BPF, BPF_ENABLE_STATS, ctypes.byref(attr), ctypes.sizeof(attr))
if fd < 0:
    err = ctypes.get_errno()
    sys.stderr.write(f"BPF_ENABLE_STATS: {os.strerror(err)}\n")
    sys.exit(1)
sys.stdout.write("enabled\n")
sys.stdout.flush()
sys.stdin.read()
os.close(fd)
