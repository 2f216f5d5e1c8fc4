"""A syscall-heavy loop timed inside the worker, so that process start and
the protocol do not count: what seccomp (every call) and Landlock (opens) cost.

    {"call": "getppid" | "stat" | "open" | "none", "n": 200000} -> nanoseconds
"""
import os
import time

from nodus_extension.worker import register_tool, run_loop

PATH = "nodus-extension.json"  # in the extension folder (the worker's cwd)


def loop(args):
    n = int(args.get("n", 200000))
    call = args.get("call", "getppid")
    if call == "getppid":  # the cheapest system call: the filter is most of it
        f = os.getppid
        t = time.perf_counter_ns()
        for _ in range(n):
            f()
    elif call == "stat":  # a path walk (not a Landlock hook)
        f = os.stat
        t = time.perf_counter_ns()
        for _ in range(n):
            f(PATH)
    elif call == "open":  # open + close: Landlock checks every open
        o, c, flags = os.open, os.close, os.O_RDONLY
        t = time.perf_counter_ns()
        for _ in range(n):
            c(o(PATH, flags))
    elif call == "none":  # the loop and a builtin call, no system call
        f = int
        t = time.perf_counter_ns()
        for _ in range(n):
            f()
    else:
        raise ValueError(f"unknown call {call!r}")
    return time.perf_counter_ns() - t


register_tool("bench.loop", loop)
run_loop()
