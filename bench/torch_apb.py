# SPDX-License-Identifier: MIT
"""APB written in PyTorch, the side-by-side baseline of bench/prefill's `apb` rows (issue 15).

Written from ../shared/APB_SPEC.md with apb's defaults, on one GPU, hosts one after another:
W hosts, context block B = ceil(Lc / W), host r > 0 prepends the anchor (first 16 context tokens,
the question, then context tokens up to A, positions 0..A-1), query-aware selection (the question's
post-RoPE queries of host 1's anchor, averaged per KV head; raw dot-product scores of the local
keys, max-pool 5 inside the block, top-K per KV head) on hosts 0..W-2, passing block = the
selections of earlier hosts, attention of [anchor | local] over [passing | anchor | local] with
the anchor rows skipping the passing block, then the question pass (the question's rows over
every host's local cache, LSE-merged) and the first token. Every attention call is one fused
cuDNN SDPA call (torch's _scaled_dot_product_cudnn_attention, which returns the log-sum-exp);
the passing part and the [anchor | local] part are merged by LSE, the strongest form we could
write in PyTorch (a single masked SDPA call would fall back to a slow backend).
"""
import math
import time

import torch
import torch.nn.functional as F


def attn_lse(q, k, v, causal):
    """q (1, H, n, d), k/v (1, Hk, m, d) bf16 -> (o (1, H, n, d), lse (1, H, n) fp32)."""
    H, Hk = q.shape[1], k.shape[1]
    if Hk != H:
        k = k.repeat_interleave(H // Hk, dim=1)
        v = v.repeat_interleave(H // Hk, dim=1)
    if q.is_cuda:
        r = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False)
        return r[0], r[1].reshape(q.shape[0], H, q.shape[2]).float()
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        n, m = s.shape[-2:]
        s = s.masked_fill(torch.ones(n, m, dtype=torch.bool, device=s.device).triu(m - n + 1), float("-inf"))
    lse = torch.logsumexp(s, -1)
    return (torch.softmax(s, -1) @ v.float()).to(q.dtype), lse


def merge(o1, l1, o2, l2):
    """LSE merge of two partial results over disjoint keys."""
    l = torch.logaddexp(l1, l2)
    return (o1.float() * (l1 - l).exp()[..., None] + o2.float() * (l2 - l).exp()[..., None]).to(o1.dtype), l


def check_attention(dev):
    """The host attention (passing part + causal part, LSE-merged) against one masked call."""
    torch.manual_seed(1)
    H, Hk, d, A, B, P = 8, 2, 128, 64, 192, 96
    q = torch.randn(1, H, A + B, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(1, Hk, P + A + B, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(1, Hk, P + A + B, d, device=dev, dtype=torch.bfloat16)
    o1, l1 = attn_lse(q, k[:, :, P:], v[:, :, P:], True)
    o2, l2 = attn_lse(q[:, :, A:], k[:, :, :P], v[:, :, :P], False)
    om, _ = merge(o1[:, :, A:], l1[:, :, A:], o2, l2)
    o = torch.cat([o1[:, :, :A], om], 2)
    mask = torch.ones(A + B, P + A + B, dtype=torch.bool, device=dev)
    mask[:, P:] = torch.ones(A + B, A + B, dtype=torch.bool, device=dev).tril()
    mask[:A, :P] = False
    ref = F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(H // Hk, 1),
                                         v.float().repeat_interleave(H // Hk, 1), attn_mask=mask)
    return float((o.float() - ref).norm() / ref.norm())


class APB:
    def __init__(self, model, W, A, K):
        self.m, self.W, self.A, self.K = model, W, A, K
        c = model.config
        self.H, self.Hk = c.num_attention_heads, c.num_key_value_heads
        self.d = c.hidden_size // self.H
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
        self.rot = apply_rotary_pos_emb

    def qkv(self, layer, x, pos):
        a = layer.self_attn
        xn = layer.input_layernorm(x)
        n = x.shape[1]
        q = a.q_proj(xn).view(1, n, self.H, self.d).transpose(1, 2)
        k = a.k_proj(xn).view(1, n, self.Hk, self.d).transpose(1, 2)
        v = a.v_proj(xn).view(1, n, self.Hk, self.d).transpose(1, 2)
        cos, sin = self.m.model.rotary_emb(x, pos[None])
        q, k = self.rot(q, k, cos, sin)
        return q, k, v

    def post(self, layer, x, o):
        x = x + layer.self_attn.o_proj(o.transpose(1, 2).reshape(1, x.shape[1], -1))
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def select(self, k, v, qbar):
        """Top-K keys of one block per KV head by max-pooled raw scores against qbar."""
        s = torch.einsum("hnd,hd->hn", k[0].float(), qbar)
        s = F.max_pool1d(s[:, None], 5, 1, 2)[:, 0]
        idx = s.topk(self.K, dim=1).indices.sort(dim=1).values
        g = idx[:, :, None].expand(-1, -1, self.d)
        return k[0].gather(1, g)[None], v[0].gather(1, g)[None]

    @torch.no_grad()
    def run(self, ctx, question):
        m, W, A, K = self.m, self.W, self.A, self.K
        dev, Lc, nq = ctx.device, ctx.numel(), question.numel()
        B = (Lc + W - 1) // W
        emb = m.model.embed_tokens
        anchor_ids = torch.cat([ctx[:16], question, ctx[16:16 + A - 16 - nq]])
        xs, pos = [], []
        for r in range(W):
            loc = torch.arange(r * B, min(Lc, (r + 1) * B), device=dev)
            if r == 0:
                xs.append(emb(ctx[loc])[None])
                pos.append(loc)
            else:
                xs.append(emb(torch.cat([anchor_ids, ctx[loc]]))[None])
                pos.append(torch.cat([torch.arange(A, device=dev), loc]))
        caches = []
        for layer in m.model.layers:
            qkv = [self.qkv(layer, xs[r], pos[r]) for r in range(W)]
            qq = qkv[1][0][:, :, 16:16 + nq] if W > 1 else qkv[0][0][:, :, -nq:]
            qbar = qq[0].float().mean(1).view(self.Hk, self.H // self.Hk, self.d).mean(1)
            sel = []
            for r in range(W - 1):  # the last host's block has no later reader
                a0 = 0 if r == 0 else A
                sel.append(self.select(qkv[r][1][:, :, a0:], qkv[r][2][:, :, a0:], qbar))
            cache = []
            for r in range(W):
                q, k, v = qkv[r]
                o, l = attn_lse(q, k, v, True)
                if r > 0:
                    pk = torch.cat([s[0] for s in sel[:r]], 2)
                    pv = torch.cat([s[1] for s in sel[:r]], 2)
                    o2, l2 = attn_lse(q[:, :, A:], pk, pv, False)
                    om, _ = merge(o[:, :, A:], l[:, :, A:], o2, l2)
                    o = torch.cat([o[:, :, :A], om], 2)
                xs[r] = self.post(layer, xs[r], o)
                a0 = 0 if r == 0 else A
                cache.append((k[:, :, a0:], v[:, :, a0:]))  # the anchor is dropped
            caches.append(cache)
        # question pass: its rows over every host's local cache (non-causal) and its own (causal)
        x = emb(question)[None]
        qpos = torch.arange(Lc, Lc + nq, device=dev)
        for layer, cache in zip(m.model.layers, caches):
            q, k, v = self.qkv(layer, x, qpos)
            o, l = attn_lse(q, k, v, True)
            for ck, cv in cache:
                o2, l2 = attn_lse(q, ck, cv, False)
                o, l = merge(o, l, o2, l2)
            x = self.post(layer, x, o)
        return m.lm_head(m.model.norm(x[:, -1:])).argmax(-1)


def time_apb(model, L, W, A, K, nq=64, power=None):
    """seconds of a timed run after a warm-up; power: a list that gets its NVML summary"""
    from gpu_power import Sampler
    dev = next(model.parameters()).device
    V = model.config.vocab_size
    ids = (torch.arange(L, device=dev) * 7919 + 13) % V
    apb = APB(model, W, A, K)
    ctx, question = ids[:L - nq], ids[L - nq:]
    apb.run(ctx, question)
    torch.cuda.synchronize()
    with Sampler() as s:
        t = time.perf_counter()
        apb.run(ctx, question)
        torch.cuda.synchronize()
        t = time.perf_counter() - t
    if power is not None:
        power.append(s.summary())
    return t
