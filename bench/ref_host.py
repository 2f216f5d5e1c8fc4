"""The reference host (nodus-extension 0.1.2's ExtensionRegistry) timed from
inside, for bench/bench.py. Run with the reference venv's interpreter:

    .venv-ref/bin/python bench/ref_host.py steady DIR TOOL ARGS_JSON N WARMUP
    .venv-ref/bin/python bench/ref_host.py concurrent DIR TOOL ARGS_JSON N THREADS

Prints one JSON object.
"""
import json
import os
import sys
import threading
import time

from nodus_extension.registry import ExtensionRegistry


def main():
    mode, d, tool, args, n = sys.argv[1], os.path.abspath(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), int(sys.argv[5])
    extra = int(sys.argv[6])
    reg = ExtensionRegistry()
    t = time.perf_counter_ns()
    name = reg.load(d).name
    reg.invoke(name, tool, args)
    first = time.perf_counter_ns() - t
    out = {"first_ns": first}
    if mode == "steady":
        for _ in range(extra):
            reg.invoke(name, tool, args)
        samples = []
        all_t = time.perf_counter_ns()
        for _ in range(n):
            t = time.perf_counter_ns()
            reg.invoke(name, tool, args)
            samples.append(time.perf_counter_ns() - t)
        out.update(samples_ns=samples, total_ns=time.perf_counter_ns() - all_t)
    elif mode == "concurrent":
        per = n // extra
        lat = []
        lock = threading.Lock()

        def caller():
            mine = []
            for _ in range(per):
                t = time.perf_counter_ns()
                reg.invoke(name, tool, args)
                mine.append(time.perf_counter_ns() - t)
            with lock:
                lat.extend(mine)

        threads = [threading.Thread(target=caller) for _ in range(extra)]
        t = time.perf_counter_ns()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        el = time.perf_counter_ns() - t
        lat.sort()
        out.update(callers=extra, invokes=per * extra, elapsed_ns=el, per_s=per * extra / (el / 1e9),
                   p50_ns=lat[len(lat) // 2], p99_ns=lat[min(len(lat) - 1, int(len(lat) * 0.99))])
    reg.unload(name)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
