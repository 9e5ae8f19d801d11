#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Where a GPU run's time went, per op, from an apb trace (apb_run --trace, bench/prefill --trace-dir).

GPU task records (STARPU_CUDA_ASYNC) start when the body queues its kernels and end when the
stream's event completes, so the records of one worker overlap while tasks are pipelined. On one
in-order stream the time a task adds is end_i - max(start_i, end_{i-1}) (its exclusive time);
summed per op this splits the worker's span exactly, and what is left is the gaps (the GPU idle).

    python3 bench/trace_ops.py TRACE.json [TRACE.json ...] [--json OUT.json]

Accepts .json or .json.xz. Prints one table per trace and worker; the TFLOP/s column is the ops'
FLOP counts (the tasks' STARPU_FLOPS, in traces written since session 10) over their exclusive
time, i.e. the rate each op reached inside the run, overheads of its task included.
"""
import argparse
import collections
import json
import lzma
import sys


def load(path):
    op = lzma.open if path.endswith(".xz") else open
    with op(path, "rt") as f:
        return json.load(f)


def per_op(events):
    """{op: [seconds, tasks, flops]}, span_s, gaps_s of one worker's complete events."""
    ev = sorted(events, key=lambda e: e["ts"])
    tot = collections.defaultdict(lambda: [0.0, 0, 0.0])
    prev_end, gaps = ev[0]["ts"], 0.0
    for e in ev:
        s, t = e["ts"], e["ts"] + e["dur"]
        if s > prev_end:
            gaps += s - prev_end
        o = tot[e.get("args", {}).get("op", e["name"].split("-")[0])]
        o[0] += max(t - max(s, prev_end), 0.0) * 1e-6
        o[1] += 1
        o[2] += float(e.get("args", {}).get("flops", 0) or 0)
        prev_end = max(prev_end, t)
    return dict(tot), (prev_end - ev[0]["ts"]) * 1e-6, gaps * 1e-6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", nargs="+")
    ap.add_argument("--json", help="write the tables as JSON")
    a = ap.parse_args()
    out = []
    for path in a.traces:
        d = load(path)
        by_worker = collections.defaultdict(list)
        for e in d.get("traceEvents", []):
            if e.get("ph") == "X" and "dur" in e:
                by_worker[e.get("args", {}).get("worker", str(e.get("tid")))].append(e)
        for w, evs in sorted(by_worker.items()):
            ops, span, gaps = per_op(evs)
            print(f"{path}: worker {w}: span {span:.3f} s, idle between tasks {gaps:.3f} s")
            print(f"  {'op':14s} {'time_s':>8s} {'share':>6s} {'tasks':>6s} {'us/task':>9s} {'TFLOP/s':>8s}")
            for op, (s, n, fl) in sorted(ops.items(), key=lambda x: -x[1][0]):
                rate = f"{fl / s * 1e-12:8.4g}" if fl > 0 and s > 0 else f"{'-':>8s}"
                print(f"  {op:14s} {s:8.3f} {100 * s / span:5.1f}% {n:6d} {1e6 * s / n:9.1f} {rate}")
            out.append({"trace": path, "worker": w, "span_s": span, "gaps_s": gaps,
                        "ops": {op: {"time_s": s, "tasks": n, "flops": fl} for op, (s, n, fl) in ops.items()}})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
