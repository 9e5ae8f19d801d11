#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""PyTorch baseline of Spava's speed test (issue 18): the language model of a video LMM
(Qwen2.5-VL-7B-Instruct's shapes: Qwen2 layers, 28 x 3584, 28/4 heads, random bf16 weights,
transformers + SDPA full attention) prefills N input-embedding rows and returns the logits of
the last one (prefill + first token), for each N. 1-D RoPE instead of mRoPE: the same cost
(a few elementwise ops per row). Prints a table and writes JSON. Runs on the GPU machine.

    python3 bench/torch_video.py --tokens 8192,16384,32768 --json out.json
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_prefill import timed  # noqa: E402  (the same warm-up + best-of timing as the LLM baseline)

SHAPES = {  # language models of the VLMs in Spava's speed test
    "qwen2.5-vl-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                          num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
    "qwen2.5-vl-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                          num_attention_heads=16, num_key_value_heads=2, vocab_size=151936),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen2.5-vl-7b", choices=sorted(SHAPES))
    ap.add_argument("--tokens", default="8192,16384,32768")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(max_position_embeddings=131072, rope_theta=1000000.0, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, **SHAPES[a.preset])
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    print(f"PyTorch {torch.__version__}, {torch.cuda.get_device_name(0)}, transformers Qwen2 "
          f"({a.preset} language model), random bf16, SDPA, input embeddings")
    print(f"{'tokens':>8} {'prefill_s':>10} {'tokens/s':>10} {'peak_GiB':>9}")
    runs = []
    for n in [int(x) for x in a.tokens.split(",")]:
        x = torch.randn(1, n, cfg.hidden_size, device="cuda", dtype=torch.bfloat16) * 0.02
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

        def prefill():
            with torch.no_grad():
                model(inputs_embeds=x, use_cache=True, logits_to_keep=1).logits.argmax(-1).item()
        best = timed(prefill, reps=a.reps)  # one warm-up call, then the best of reps
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{n:>8} {best:>10.3f} {n / best:>10.0f} {peak:>9.1f}", flush=True)
        runs.append({"preset": a.preset, "tokens": n, "prefill_s": best, "tokens_per_s": n / best,
                     "peak_gib": peak})
        del x
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"engine": "pytorch", "torch": torch.__version__, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
