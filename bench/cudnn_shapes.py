#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""cuDNN's fused attention rate at the shapes apb's prefill tiles produce (issue 15).

One causal call over a square (what a whole-prompt SDPA call is), and unmasked calls of a query tile
over a key block (what a causal tile becomes when its fully visible keys are one call and its
diagonal square another). Llama-3.1-8B heads (32 query, 8 KV, d 128), bf16, random operands,
PyTorch's SDPA with the cuDNN backend (head-major tensors, K/V repeated to 32 heads). Prints a table
and writes JSON; the best of --reps timed calls after one warm-up."""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def rate(nq, nk, causal, reps, H=32, d=128):
    g = torch.Generator(device="cuda").manual_seed(nq * 7 + nk)
    q = torch.randn(1, H, nq, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, H, nk, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, H, nk, d, device="cuda", dtype=torch.bfloat16, generator=g)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        best = 1e30
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            b.record()
            torch.cuda.synchronize()
            best = min(best, a.elapsed_time(b) / 1e3)
    pairs = nq * (nq + 1) / 2 if causal else nq * nk
    return best, 4.0 * H * d * pairs / best / 1e12


def variant(nq, nk, causal, reps, stats, token_major, hk, H=32, d=128):
    """One cuDNN call through aten's op: log-sum-exp on or off, token-major strides (B, S, H, d
    viewed as B, H, S, d) or head-major, hk KV heads (GQA when hk < H). None if refused."""
    g = torch.Generator(device="cuda").manual_seed(nq + nk)

    def mk(n, h):
        if token_major:
            return torch.randn(1, n, h, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
        return torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    q, k, v = mk(nq, H), mk(nk, hk), mk(nk, hk)
    op = torch.ops.aten._scaled_dot_product_cudnn_attention
    try:
        op(q, k, v, None, stats, 0.0, causal, False)
        torch.cuda.synchronize()
    except Exception as e:  # refused shapes print why
        return None, str(e).splitlines()[0][:60]
    best = 1e30
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        op(q, k, v, None, stats, 0.0, causal, False)
        b.record()
        torch.cuda.synchronize()
        best = min(best, a.elapsed_time(b) / 1e3)
    pairs = nq * (nq + 1) / 2 if causal else nq * nk
    return best, 4.0 * H * d * pairs / best / 1e12


def under_load(nq, nk, causal, reps, H=32, d=128):
    """The same call timed between bf16 GEMMs (8192 x 4096 x 14336, an MLP projection), as inside a
    prefill: the GPU at its sustained clock and power instead of idle before each call. Returns the
    call's best time and rate, the GEMMs' rate, and the SM clock (MHz) after the run if known."""
    g = torch.Generator(device="cuda").manual_seed(nq * 3 + nk)
    q = torch.randn(1, H, nq, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(1, H, nk, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, H, nk, d, device="cuda", dtype=torch.bfloat16, generator=g)
    x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    w = torch.randn(14336, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    for _ in range(50):  # ~1 s of GEMMs first
        x @ w.t()
    best, gemm_s, n_gemm = 1e30, 0.0, 0
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        for _ in range(reps):
            e = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            e[0].record()
            for _ in range(4):
                x @ w.t()
            e[1].record()
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            e[2].record()
            torch.cuda.synchronize()
            best = min(best, e[1].elapsed_time(e[2]) / 1e3)
            gemm_s += e[0].elapsed_time(e[1]) / 1e3
            n_gemm += 4
    clock = None
    try:
        clock = torch.cuda.clock_rate()
    except Exception:  # needs pynvml
        pass
    pairs = nq * (nq + 1) / 2 if causal else nq * nk
    return best, 4.0 * H * d * pairs / best / 1e12, 2.0 * 8192 * 4096 * 14336 * n_gemm / gemm_s / 1e12, clock


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--variants", action="store_true", help="also: log-sum-exp, token-major strides, GQA")
    ap.add_argument("--under-load", action="store_true", help="also: each call timed right after bf16 GEMMs")
    a = ap.parse_args()
    print(f"cuDNN SDPA through PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}, "
          f"cudnn {torch.backends.cudnn.version()}")
    print(f"{'queries':>8} {'keys':>8} {'mask':>7} {'ms':>9} {'TFLOP/s':>8}")
    rows = []
    shapes = [(s, s, True) for s in (8192, 16384, 32768, 65536, 131072)]
    shapes += [(8192, k, False) for k in (8192, 16384, 32768, 65536, 122880)]
    shapes += [(16384, k, False) for k in (16384, 114688)]
    for nq, nk, causal in shapes:
        t, r = rate(nq, nk, causal, a.reps)
        rows.append({"queries": nq, "keys": nk, "causal": causal, "s": t, "tflops": r})
        print(f"{nq:>8} {nk:>8} {'causal' if causal else 'none':>7} {t * 1e3:>9.3f} {r:>8.1f}")
    if a.under_load:
        print(f"{'queries':>8} {'keys':>8} {'mask':>7} {'alone':>8} {'after GEMMs':>12} {'GEMM TFLOP/s':>13} {'SM MHz':>7}")
        for nq, nk, causal in ((8192, 8192, True), (16384, 16384, True), (8192, 65536, False), (8192, 122880, False)):
            _, alone = rate(nq, nk, causal, a.reps)
            t, r, gr, clk = under_load(nq, nk, causal, max(a.reps, 5))
            rows.append({"queries": nq, "keys": nk, "causal": causal, "alone_tflops": alone, "under_load_s": t,
                         "under_load_tflops": r, "gemm_tflops": gr, "sm_mhz": clk})
            print(f"{nq:>8} {nk:>8} {'causal' if causal else 'none':>7} {alone:>8.1f} {r:>12.1f} {gr:>13.1f} "
                  f"{clk if clk is not None else '-':>7}")
    if a.variants:
        print(f"{'queries':>8} {'keys':>8} {'mask':>7} {'lse':>4} {'layout':>6} {'kv_h':>4} {'ms':>9} {'TFLOP/s':>8}")
        for nq, nk, causal in ((16384, 16384, True), (8192, 65536, False), (8192, 8192, True)):
            for stats, tm, hk in ((0, 0, 32), (1, 0, 32), (1, 1, 32), (1, 0, 8), (1, 1, 8), (0, 1, 8)):
                t, r = variant(nq, nk, causal, a.reps, bool(stats), bool(tm), hk)
                rows.append({"queries": nq, "keys": nk, "causal": causal, "lse": stats, "token_major": tm,
                             "kv_heads": hk, "s": t, "tflops": r})
                lay = "bshd" if tm else "bhsd"
                if t is None:
                    print(f"{nq:>8} {nk:>8} {'causal' if causal else 'none':>7} {stats:>4} {lay:>6} {hk:>4} refused: {r}")
                else:
                    print(f"{nq:>8} {nk:>8} {'causal' if causal else 'none':>7} {stats:>4} {lay:>6} {hk:>4} "
                          f"{t * 1e3:>9.3f} {r:>8.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0), "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
