#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Independent float64 numpy reference of the Llama / Qwen2 forward pass.

Reads a Hugging Face model directory (config.json + model.safetensors, or shards listed in
model.safetensors.index.json) and computes next-token logits for a sequence of token ids.
Everything is computed in float64 from the stored weights; no KV cache, no torch: the whole
sequence goes through every layer at once with a causal mask. It is meant to be obviously
correct, not fast.

  llama_ref.py --model DIR --ids 1,2,3 --out logits.bin [--last N]
      write the logits of the last N positions (default: all) as little-endian float32,
      row-major [N, vocab]
  llama_ref.py --model DIR --prompt "The capital of France is" --generate 12
      tokenize with DIR/tokenizer.json (no special tokens added), then print the greedy
      continuation ids (comma-separated) on stdout and the decoded text on stderr

Model (per layer, x is the residual stream [T, hidden]):
  h = x + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = rmsnorm(x) * w_in
  x = h + down_proj(silu(gate_proj(m)) * up_proj(m)),                 m = rmsnorm(h) * w_post
  logits = lm_head(rmsnorm(x) * w_final)   (lm_head = embed_tokens when tied)
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
from safetensors.numpy import load_file


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_weights(model_dir):
    """All tensors of the model as a {name: ndarray} dict (kept in their stored dtype)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    weights = {}
    for shard in shards:
        weights.update(load_file(os.path.join(model_dir, shard)))
    return weights


class Model:
    """Hyper-parameters and weights of a Llama or Qwen2 causal LM."""

    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        if cfg.get("model_type") not in ("llama", "qwen2"):
            sys.exit(f"llama_ref: unsupported model_type {cfg.get('model_type')!r}")
        self.cfg = cfg
        self.dim = cfg["hidden_size"]
        self.n_layers = cfg["num_hidden_layers"]
        self.n_heads = cfg["num_attention_heads"]
        self.n_kv = cfg.get("num_key_value_heads") or self.n_heads
        self.head_dim = cfg.get("head_dim") or self.dim // self.n_heads
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.vocab = cfg["vocab_size"]
        self.w = load_weights(model_dir)
        self.tied = "lm_head.weight" not in self.w
        if self.tied and not cfg.get("tie_word_embeddings", True):
            sys.exit("llama_ref: lm_head.weight missing but tie_word_embeddings is false")
        self.inv_freq = rope_inv_freq(cfg, self.head_dim)

    def get(self, name):
        """A weight as float64 (converted on use so that the model stays in its stored dtype)."""
        return self.w[name].astype(np.float64)

    def has(self, name):
        return name in self.w


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------

def rmsnorm(x, w, eps):
    """x * rsqrt(mean(x^2) + eps) * w over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def linear(model, x, name):
    """x @ W^T (+ b): HF layout W is [out_features, in_features]."""
    y = x @ model.get(name + ".weight").T
    if model.has(name + ".bias"):
        y = y + model.get(name + ".bias")
    return y


def rope_inv_freq(cfg, head_dim):
    """inv_freq[i] = theta^(-2i/d), i < d/2, with optional Llama-3 frequency scaling."""
    theta = cfg.get("rope_theta", 10000.0)
    inv_freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaling = cfg.get("rope_scaling")
    kind = None if scaling is None else scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return inv_freq
    if kind != "llama3":
        sys.exit(f"llama_ref: unsupported rope_scaling type {kind!r}")
    # Llama 3.1: long wavelengths are divided by `factor`, short ones kept, the band in between
    # interpolated linearly in 1/wavelength (same formulas as transformers' _compute_llama3_parameters).
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
    return np.where(medium, smoothed, scaled)


def rope(x, positions, inv_freq):
    """Rotate-half RoPE on x [T, heads, d]: pairs are (x[i], x[i + d/2])."""
    ang = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [T, d/2]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=-1)[:, None, :]  # [T, 1, d]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], axis=-1)[:, None, :]
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


def attention(q, k, v):
    """Causal grouped-query attention. q [T, H, d], k/v [T, KV, d] -> [T, H*d]."""
    T, H, d = q.shape
    group = H // k.shape[1]
    mask = np.triu(np.full((T, T), -np.inf), k=1)  # position t sees positions <= t
    out = np.empty_like(q)
    for h in range(H):
        kv = h // group  # query head h shares KV head h // group
        scores = (q[:, h, :] @ k[:, kv, :].T) / math.sqrt(d) + mask
        out[:, h, :] = softmax(scores) @ v[:, kv, :]
    return out.reshape(T, H * d)


# ---------------------------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------------------------

def forward(model, ids, last=None):
    """float64 logits [N, vocab] for the last N positions of `ids` (all when last is None)."""
    ids = np.asarray(ids, dtype=np.int64)
    T = len(ids)
    positions = np.arange(T)
    x = model.w["model.embed_tokens.weight"][ids].astype(np.float64)  # [T, dim]
    for i in range(model.n_layers):
        p = f"model.layers.{i}."
        n = rmsnorm(x, model.get(p + "input_layernorm.weight"), model.eps)
        q = linear(model, n, p + "self_attn.q_proj").reshape(T, model.n_heads, model.head_dim)
        k = linear(model, n, p + "self_attn.k_proj").reshape(T, model.n_kv, model.head_dim)
        v = linear(model, n, p + "self_attn.v_proj").reshape(T, model.n_kv, model.head_dim)
        q, k = rope(q, positions, model.inv_freq), rope(k, positions, model.inv_freq)
        x = x + linear(model, attention(q, k, v), p + "self_attn.o_proj")
        m = rmsnorm(x, model.get(p + "post_attention_layernorm.weight"), model.eps)
        x = x + linear(model, silu(linear(model, m, p + "mlp.gate_proj")) * linear(model, m, p + "mlp.up_proj"),
                       p + "mlp.down_proj")
    if last is not None:
        x = x[T - last:]
    x = rmsnorm(x, model.get("model.norm.weight"), model.eps)
    head = model.w["model.embed_tokens.weight" if model.tied else "lm_head.weight"]
    return x @ head.astype(np.float64).T


def generate(model, ids, k):
    """Greedy continuation: k new token ids (recomputes the full sequence each step)."""
    seq, new = list(ids), []
    for _ in range(k):
        nxt = int(np.argmax(forward(model, seq, last=1)[0]))
        seq.append(nxt)
        new.append(nxt)
    return new


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def load_tokenizer(model_dir):
    from tokenizers import Tokenizer  # only needed for --prompt / decoding
    return Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0].replace("@brief ", ""))
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids", help="comma-separated input token ids")
    src.add_argument("--prompt", help="text, tokenized with DIR/tokenizer.json (no special tokens added)")
    ap.add_argument("--out", help="write float32 LE logits [N, vocab] of the input here")
    ap.add_argument("--last", type=int, help="only the last N positions (default: all)")
    ap.add_argument("--generate", type=int, default=0, metavar="K", help="print K greedy continuation ids")
    ap.add_argument("--time", action="store_true", help="report forward time on stderr")
    args = ap.parse_args()

    model = Model(args.model)
    tok = None
    if args.prompt is not None:
        tok = load_tokenizer(args.model)
        ids = tok.encode(args.prompt, add_special_tokens=False).ids
        print(f"prompt ids: {','.join(map(str, ids))}", file=sys.stderr)
    else:
        ids = [int(s) for s in args.ids.split(",") if s.strip()]
    if not ids:
        sys.exit("llama_ref: empty input")
    if max(ids) >= model.vocab or min(ids) < 0:
        sys.exit(f"llama_ref: token id out of range [0, {model.vocab})")
    if args.last is not None and not 1 <= args.last <= len(ids):
        sys.exit(f"llama_ref: --last must be in [1, {len(ids)}]")

    if args.out or not args.generate:
        t0 = time.perf_counter()
        logits = forward(model, ids, last=args.last)
        if args.time:
            print(f"forward: {len(ids)} tokens in {time.perf_counter() - t0:.3f} s", file=sys.stderr)
        if args.out:
            logits.astype("<f4").tofile(args.out)
        else:
            print(f"argmax of last position: {int(np.argmax(logits[-1]))}")

    if args.generate:
        t0 = time.perf_counter()
        new = generate(model, ids, args.generate)
        if args.time:
            print(f"generate: {args.generate} tokens in {time.perf_counter() - t0:.3f} s", file=sys.stderr)
        print(",".join(map(str, new)))
        if tok is None and os.path.exists(os.path.join(args.model, "tokenizer.json")):
            tok = load_tokenizer(args.model)
        if tok is not None:
            print(f"text: {tok.decode(new, skip_special_tokens=False)!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
