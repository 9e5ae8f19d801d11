#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief NIAH accuracy sweep: methods x lengths x depths x seeds through apps/apb_run --niah.

Prints a table of exact-match retrieval accuracy per (method, length) and writes JSON.
    bench/accuracy.py [--run apps/apb_run] [--methods full,apb,star] [--lengths 1024,2048,4096]
                      [--depths 0.1,0.5,0.9] [--seeds 1,2] [--hosts 4] [--json FILE]
"""
import argparse, json, re, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--run", default="apps/apb_run")
ap.add_argument("--methods", default="full,apb,star")
ap.add_argument("--lengths", default="1024,2048,4096,8000")
ap.add_argument("--depths", default="0.1,0.5,0.9")
ap.add_argument("--seeds", default="1,2")
ap.add_argument("--hosts", type=int, default=4)
ap.add_argument("--json", default="bench/results/accuracy.json")
a = ap.parse_args()

rows, results = {}, []
for L in map(int, a.lengths.split(",")):
    for m in a.methods.split(","):
        for dp in map(float, a.depths.split(",")):
            for sd in map(int, a.seeds.split(",")):
                cmd = [a.run, "--niah", str(L), "--depth", str(dp), "--seed", str(sd), "--method", m,
                       "--hosts", str(a.hosts), "--max-new-tokens", "12", "--no-progress"]
                t = time.time()
                p = subprocess.run(cmd, capture_output=True, text=True)
                dt = time.time() - t
                if p.returncode != 0:
                    sys.exit(f"accuracy: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
                gt = re.search(r"Ground Truth: (\d+)", p.stdout).group(1)
                pred = re.search(r"Prediction:(.*)", p.stdout).group(1).strip()
                hit = gt in pred
                results.append(dict(method=m, length=L, depth=dp, seed=sd, hosts=a.hosts if m != "full" else 1,
                                    truth=gt, prediction=pred, hit=hit, seconds=round(dt, 2)))
                rows.setdefault((m, L), []).append(hit)
                print(f"  {m:5s} L={L:6d} depth={dp:.2f} seed={sd}: {'hit ' if hit else 'MISS'} "
                      f"truth={gt} pred={pred!r} ({dt:.1f} s)", file=sys.stderr)

methods = a.methods.split(",")
print(f"\nNIAH exact-match accuracy (hosts={a.hosts} for apb/star; depths {a.depths}; seeds {a.seeds})")
print(f"{'length':>8} " + " ".join(f"{m:>10}" for m in methods))
for L in map(int, a.lengths.split(",")):
    cells = []
    for m in methods:
        h = rows[(m, L)]
        cells.append(f"{sum(h)}/{len(h)}")
    print(f"{L:>8} " + " ".join(f"{c:>10}" for c in cells))
import os
os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
with open(a.json, "w") as f:
    json.dump(dict(command=" ".join(sys.argv), results=results), f, indent=1)
print(f"wrote {a.json}")
