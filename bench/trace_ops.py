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
time, i.e. the rate each op reached inside the run, overheads of its task included. Where the
trace has the GPU's power and SM clock counters (NVML samples, written since session 13), the
MHz and W columns are their time-weighted means over each op's exclusive time (the counters
are step functions between samples; with several GPUs, the first GPU's).
"""
import argparse
import bisect
import collections
import json
import lzma
import sys


def load(path):
    op = lzma.open if path.endswith(".xz") else open
    with op(path, "rt") as f:
        return json.load(f)


class Counter:
    """a counter track (ts ascending, value) as a step function; integral over [a, b]"""

    def __init__(self, pts):
        self.ts = [p[0] for p in pts]
        self.v = [p[1] for p in pts]
        self.cum = [0.0]
        for i in range(1, len(pts)):
            self.cum.append(self.cum[-1] + self.v[i - 1] * (self.ts[i] - self.ts[i - 1]))

    def _at(self, x):  # integral from ts[0] to x (clamped to the samples' range)
        x = min(max(x, self.ts[0]), self.ts[-1])
        i = max(bisect.bisect_right(self.ts, x) - 1, 0)
        return self.cum[i] + self.v[i] * (x - self.ts[i])

    def integral(self, a, b):
        return self._at(b) - self._at(a)

    def covered(self, a, b):  # the part of [a, b] inside the samples' range
        return max(min(b, self.ts[-1]) - max(a, self.ts[0]), 0.0)


def counters(events):
    """{'MHz': Counter, 'W': Counter} of the first GPU's counter tracks (empty without them)"""
    pts = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "C" and e.get("name", "").startswith("GPU0 "):
            for k in ("MHz", "W"):
                if k in e.get("args", {}):
                    pts[k].append((e["ts"], float(e["args"][k])))
    return {k: Counter(sorted(v)) for k, v in pts.items() if len(v) >= 2}


def per_op(events, ctr=None):
    """{op: [seconds, tasks, flops, {counter: integral}, covered_us]}, span_s, gaps_s of one
    worker's complete events."""
    ev = sorted(events, key=lambda e: e["ts"])
    ctr = ctr or {}
    tot = collections.defaultdict(lambda: [0.0, 0, 0.0, collections.defaultdict(float), 0.0])
    prev_end, gaps = ev[0]["ts"], 0.0
    for e in ev:
        s, t = e["ts"], e["ts"] + e["dur"]
        if s > prev_end:
            gaps += s - prev_end
        o = tot[e.get("args", {}).get("op", e["name"].split("-")[0])]
        a = max(s, prev_end)
        o[0] += max(t - a, 0.0) * 1e-6
        o[1] += 1
        o[2] += float(e.get("args", {}).get("flops", 0) or 0)
        if t > a and ctr:
            for k, c in ctr.items():
                o[3][k] += c.integral(a, t)
            o[4] += next(iter(ctr.values())).covered(a, t)
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
        ctr = counters(d.get("traceEvents", []))
        for w, evs in sorted(by_worker.items()):
            ops, span, gaps = per_op(evs, ctr)
            print(f"{path}: worker {w}: span {span:.3f} s, idle between tasks {gaps:.3f} s")
            extra = f" {'MHz':>6s} {'W':>5s}" if ctr else ""
            print(f"  {'op':14s} {'time_s':>8s} {'share':>6s} {'tasks':>6s} {'us/task':>9s} {'TFLOP/s':>8s}{extra}")
            rows = {}
            for op, (s, n, fl, integ, cov) in sorted(ops.items(), key=lambda x: -x[1][0]):
                rate = f"{fl / s * 1e-12:8.4g}" if fl > 0 and s > 0 else f"{'-':>8s}"
                mean = {k: integ[k] / cov for k in ctr} if cov > 0 else {}
                col = "".join(f" {mean[k]:{6 if k == 'MHz' else 5}.0f}" if k in mean else f" {'-':>{6 if k == 'MHz' else 5}s}"
                              for k in ("MHz", "W") if ctr)
                print(f"  {op:14s} {s:8.3f} {100 * s / span:5.1f}% {n:6d} {1e6 * s / n:9.1f} {rate}{col}")
                rows[op] = {"time_s": s, "tasks": n, "flops": fl}
                if mean:
                    rows[op].update({"sm_mhz_mean": mean.get("MHz"), "power_w_mean": mean.get("W")})
            out.append({"trace": path, "worker": w, "span_s": span, "gaps_s": gaps, "ops": rows})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
