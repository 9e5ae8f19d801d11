#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""PyTorch baseline for bench/prefill: a Hugging Face transformers LlamaForCausalLM with the
Llama-3.1-8B shapes and random bf16 weights, SDPA attention, prefill of L tokens (KV cache kept,
logits of the last position only), and a causal SDPA call alone for the attention rate.
Prints a table and writes JSON. Runs on the GPU machine (PyTorch + transformers are there)."""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_power import line as power_line  # noqa: E402


def timed(fn, reps=1, power=None):
    """best of reps after a warm-up; power: a list that gets the NVML summary of the last rep"""
    from gpu_power import Sampler
    fn()
    torch.cuda.synchronize()
    best = 1e30
    for r in range(reps):
        with Sampler() as s:
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        if power is not None and r == reps - 1:
            power.append(s.summary())
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="32768,65536,131072")
    ap.add_argument("--json")
    ap.add_argument("--decode", type=int, default=32, help="decode steps timed after the prefill")
    ap.add_argument("--apb", default="131072", help="lengths of the APB-in-PyTorch baseline (bench/torch_apb.py); '' = none")
    ap.add_argument("--apb-shape", default="8,4096,2048", help="W,A,K of that baseline (bench/prefill's defaults)")
    a = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                      rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    dev = torch.cuda.get_device_name(0)
    print(f"PyTorch {torch.__version__}, {dev}, transformers Llama-3.1-8B shapes, random bf16, SDPA")
    runs = []
    print(f"{'tokens':>8} {'prefill_s':>10} {'tokens/s':>10} {'peak_GiB':>9} {'sdpa_TFLOP/s':>13} {'dec_ms':>8}")
    for L in [int(x) for x in a.lengths.split(",")]:
        ids = (torch.arange(L, device="cuda") * 7919 + 13) % cfg.vocab_size
        ids = ids[None, :]
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

        def prefill():
            with torch.no_grad():
                model(input_ids=ids, use_cache=True, logits_to_keep=1)
        pw = []
        t = timed(prefill, power=pw)
        peak = torch.cuda.max_memory_allocated() / 2**30
        dec_ms = 0.0
        if a.decode > 0:  # transformers decode with its KV cache: one token per forward, greedy
            with torch.no_grad():
                out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
                pkv, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                del out
                for step in range(a.decode + 2):
                    if step == 2:
                        torch.cuda.synchronize()
                        t0 = time.perf_counter()
                    o = model(input_ids=nxt, past_key_values=pkv, use_cache=True)
                    pkv, nxt = o.past_key_values, o.logits[:, -1:].argmax(-1)
                    nxt.item()  # a generation loop reads every token
                torch.cuda.synchronize()
                dec_ms = (time.perf_counter() - t0) / a.decode * 1e3
                del pkv, o
            torch.cuda.empty_cache()
        q = torch.randn(1, 32, L, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, 8, L, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 8, L, 128, device="cuda", dtype=torch.bfloat16)
        ta = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), reps=3)
        attn_tf = 4.0 * 32 * 128 * (L * (L + 1) / 2) / ta * 1e-12
        del q, k, v
        print(f"{L:>8} {t:>10.3f} {L / t:>10.0f} {peak:>9.1f} {attn_tf:>13.1f} {dec_ms:>8.2f}", flush=True)
        if pw and pw[0]:
            print(f"{'':>8} prefill: {power_line(pw[0])}", flush=True)
        runs.append({"tokens": L, "prefill_s": t, "tokens_per_s": L / t, "peak_gib": peak,
                     "sdpa_causal_tflops": attn_tf, "decode_ms_per_token": dec_ms, "decode_steps": a.decode,
                     "gpu_telemetry": pw[0] if pw else None})
    apb_runs = []
    if a.apb:
        import torch_apb
        W, A, K = (int(x) for x in a.apb_shape.split(","))
        err = torch_apb.check_attention("cuda")
        print(f"APB in PyTorch (bench/torch_apb.py): W {W}, A {A}, K {K}, cuDNN SDPA calls merged by LSE; "
              f"host attention vs one masked call: rel err {err:.2e}")
        assert err < 2e-2, err
        for L in [int(x) for x in a.apb.split(",")]:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            pw = []
            t = torch_apb.time_apb(model, L, W, A, K, power=pw)
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"{L:>8} apb prefill + question pass + first token {t:.3f} s ({L / t:.0f} tokens/s), peak {peak:.1f} GiB", flush=True)
            if pw and pw[0]:
                print(f"{'':>8} apb prefill: {power_line(pw[0])}", flush=True)
            apb_runs.append({"tokens": L, "hosts": W, "anchor": A, "select": K, "prefill_s": t, "peak_gib": peak,
                             "gpu_telemetry": pw[0] if pw else None})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": dev, "torch": torch.__version__, "runs": runs, "apb_runs": apb_runs}, f, indent=1)


if __name__ == "__main__":
    main()
