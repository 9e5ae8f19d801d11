#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Independent float64 numpy implementation of APB prefill + question pass (the spec).

Written from ../shared/APB_SPEC.md, sharing only the building blocks (rmsnorm, RoPE, projections)
with llama_ref.py, to check the C runtime's `apb` method with query-aware selection:

  apb_ref.py --model DIR --ctx 1,2,... --question 7,8,9 --hosts W --anchor A --select K --out F
             [--pool reference|block]

writes the float32 logits of the last question position. Spec points implemented here:
  * split: block = ceil(L/W); host r owns context [r*block, ...) with its global positions
  * anchor (hosts r > 0): first 16 context tokens, then the question, then context from 16 on,
    A tokens in all, positions 0..A-1; host 0 has none
  * selection per layer: the question's post-RoPE queries (taken from the anchor, rows 16..),
    averaged over the question rows and each GQA group; score = k . qbar (no scaling);
    max-pool (kernel 5, stride 1, padding 2 with -inf); the first A positions of host 0's
    sequence get -inf; top-K per KV head; kept in sequence order. Where the pool runs on hosts
    r > 0 (--pool): over the whole [anchor | local] sequence with the anchor's a positions then
    set to -inf (reference, apb's default: the order of thunlp/APB, so the first local tokens can
    take the last anchor tokens' scores), or over the local block only (block)
  * passing block of host r: the selections of hosts 0..r-1, per KV head
  * mask: anchor rows attend causally within the anchor only; local rows attend to the whole
    passing block, the whole anchor, and causally within the local block
  * question pass (positions L..): exact attention over every host's local cache (no anchor,
    no passing block) and causally over the question itself
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_ref import Model, linear, rmsnorm, rope, silu  # noqa: E402

NEG = -np.inf


def masked_attention(q, k, v, allowed):
    """q [Tq, H, d], k/v [Tk, KV, d] (or per-head lists), allowed [H or 1, Tq, Tk] bool."""
    Tq, H, d = q.shape
    out = np.zeros((Tq, H, d))
    group = H // k.shape[1]
    for h in range(H):
        g = h // group
        s = q[:, h, :] @ k[:, g, :].T / math.sqrt(d)
        s = np.where(allowed, s, NEG)
        m = np.max(s, axis=1, keepdims=True)
        e = np.where(allowed, np.exp(s - m), 0.0)
        out[:, h, :] = (e / e.sum(axis=1, keepdims=True)) @ v[:, g, :]
    return out.reshape(Tq, H * d)


def dense_after_attention(model, p, x, att):
    x = x + linear(model, att, p + "self_attn.o_proj")
    m = rmsnorm(x, model.get(p + "post_attention_layernorm.weight"), model.eps)
    return x + linear(model, silu(linear(model, m, p + "mlp.gate_proj")) * linear(model, m, p + "mlp.up_proj"),
                      p + "mlp.down_proj")


def qkv(model, p, x, pos):
    T = x.shape[0]
    n = rmsnorm(x, model.get(p + "input_layernorm.weight"), model.eps)
    q = linear(model, n, p + "self_attn.q_proj").reshape(T, model.n_heads, model.head_dim)
    k = linear(model, n, p + "self_attn.k_proj").reshape(T, model.n_kv, model.head_dim)
    v = linear(model, n, p + "self_attn.v_proj").reshape(T, model.n_kv, model.head_dim)
    return rope(q, pos, model.inv_freq), rope(k, pos, model.inv_freq), v


def select(k, v, qbar, exclude, K):
    """Per KV head: top-K of max-pooled scores, first `exclude` rows never chosen."""
    T, KV, d = k.shape
    ck, cv = np.zeros((K, KV, d)), np.zeros((K, KV, d))
    for g in range(KV):
        s = k[:, g, :] @ qbar[g]
        padded = np.concatenate([[NEG, NEG], s, [NEG, NEG]])
        pooled = np.max(np.stack([padded[i:i + T] for i in range(5)]), axis=0)
        pooled[:exclude] = NEG
        idx = np.sort(np.argsort(-pooled, kind="stable")[:K])
        ck[:, g, :], cv[:, g, :] = k[idx, g, :], v[idx, g, :]
    return ck, cv


def apb(model, ctx, question, W, A, K, pool="reference"):
    L, nq = len(ctx), len(question)
    block = -(-L // W)
    emb = model.w["model.embed_tokens.weight"]
    hosts = []
    for r in range(W):
        local = list(range(r * block, min((r + 1) * block, L)))
        a = 0 if r == 0 else A
        anchor = (ctx[:min(16, L)] + question + ctx[16:])[:a]
        ids = anchor + [ctx[i] for i in local]
        pos = np.array(list(range(a)) + local)
        hosts.append(dict(a=a, n=len(local), ids=ids, pos=pos, x=emb[ids].astype(np.float64), k=[], v=[]))
    q_rows = list(range(min(16, L), min(16, L) + min(nq, A - min(16, L))))
    for i in range(model.n_layers):
        p = f"model.layers.{i}."
        proj = [qkv(model, p, h["x"], h["pos"]) for h in hosts]
        qbar = None
        if W > 1 and K > 0:
            q1 = proj[1][0][q_rows]                                   # [nq, H, d]
            G = model.n_heads // model.n_kv
            qbar = q1.reshape(len(q_rows), model.n_kv, G, model.head_dim).mean(axis=(0, 2))
        comp = []
        for r, h in enumerate(hosts[:-1]):
            if qbar is None:
                break
            _, k, v = proj[r]
            a0 = 0 if pool == "reference" else h["a"]           # first row scored and pooled
            comp.append(select(k[a0:], v[a0:], qbar, A if r == 0 else h["a"] - a0, K))
        for r, h in enumerate(hosts):
            q, k, v = proj[r]
            a, n = h["a"], h["n"]
            npass = r * K if comp else 0
            if npass:
                kk = np.concatenate([c[0] for c in comp[:r]] + [k])
                vv = np.concatenate([c[1] for c in comp[:r]] + [v])
            else:
                kk, vv = k, v
            T = a + n
            allowed = np.zeros((T, npass + T), dtype=bool)
            allowed[a:, :npass] = True                                 # local rows see passing
            allowed[:, npass:] = np.tril(np.ones((T, T), dtype=bool))  # causal over [anchor|local]
            h["k"].append(k[a:])
            h["v"].append(v[a:])
            h["x"] = dense_after_attention(model, p, h["x"], masked_attention(q, kk, vv, allowed))
    # question pass
    xq = emb[question].astype(np.float64)
    pos = np.arange(L, L + nq)
    for i in range(model.n_layers):
        p = f"model.layers.{i}."
        q, k, v = qkv(model, p, xq, pos)
        kk = np.concatenate([h["k"][i] for h in hosts] + [k])
        vv = np.concatenate([h["v"][i] for h in hosts] + [v])
        allowed = np.zeros((nq, L + nq), dtype=bool)
        allowed[:, :L] = True
        allowed[:, L:] = np.tril(np.ones((nq, nq), dtype=bool))
        xq = dense_after_attention(model, p, xq, masked_attention(q, kk, vv, allowed))
    x = rmsnorm(xq[-1:], model.get("model.norm.weight"), model.eps)
    head = model.w["model.embed_tokens.weight" if model.tied else "lm_head.weight"]
    return x @ head.astype(np.float64).T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ctx", required=True)
    ap.add_argument("--question", required=True)
    ap.add_argument("--hosts", type=int, required=True)
    ap.add_argument("--anchor", type=int, required=True)
    ap.add_argument("--select", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--pool", choices=("block", "reference"), default="reference")
    a = ap.parse_args()
    ctx = [int(s) for s in a.ctx.split(",")]
    question = [int(s) for s in a.question.split(",")]
    logits = apb(Model(a.model), ctx, question, a.hosts, a.anchor, a.select, a.pool)
    logits.astype("<f4").tofile(a.out)


if __name__ == "__main__":
    main()
