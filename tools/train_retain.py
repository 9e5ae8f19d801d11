#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Train Locret retaining heads (APB's compressor) for a Llama-architecture model.

What it trains. Per layer l, a two-layer MLP without biases scores every token per KV head from the
token's own PRE-RoPE projections (the layout `apb_run --compress retain` loads, graph/model.c):

    score[t, g] = fc2_l @ silu(fc1_l @ cat(q[t], k[t], v[t]))     fc1_l [hidden, (H + 2 Hk) d],
                                                                  fc2_l [Hk, hidden]

Target (Locret's "causal importance"): for token j and KV head g, the largest causal attention
probability any later query row i >= j of any query head of g's group gives to j,
    c[j, g] = max_{i >= j, h in group(g)} softmax_j(q_i . k_j / sqrt(d))   (RoPE applied, causal).
The heads regress y = log(max(c, 1e-6)) - mean_l,g: the log makes the many small probabilities
(which decide the ranking of a block) as visible to the loss as the few large ones, and the
per-(layer, head) mean is removed because fc2 has no bias; both are monotonic or constant shifts,
so the top-k that APB takes per KV head is the same as for c. Loss (Locret's recipe): Smooth-L1
(beta 1) between prediction and y, plus `--smooth` times the mean squared difference of the
predictions of adjacent tokens (the smoothness term: neighbours get similar scores, as APB's
max-pool of width 5 then selects runs of tokens).

Inputs are divided per feature by their RMS over the training tokens while training; the scale is
folded into fc1 when the file is written (no bias needed), so the file is the plain layout.

Data: natural prose, CPython's own reference text `pydoc_data/topics.py` (the `topics` dict of the
standard library; PSF licence), topics sorted by name, every 5th held out for evaluation, each part
joined and tokenized with the model's tokenizer (the `tokenizers` package when importable, else
apps/apb_tokenize), cut into windows of --seq tokens.

The model's forward is written here from the safetensors (RMSNorm, q/k/v/o projections, rotate-half
RoPE with rope_theta from config.json, grouped-query causal attention, SiLU-gated MLP, tied or own
lm_head) in float32 PyTorch; `verify` checks it against apb_run's logits on a prompt.

Commands (run from the repository root; the model defaults to $APB_HOME/models/smollm2-135m-instruct):
  train  [--hidden 32 --seq 1024 --train-samples 32 --steps 1500 ...] --out FILE.safetensors
         collect features and targets, train all layers' heads at once (batched), write FILE,
         then print the evaluation below
  eval   --weights FILE     held-out recall of the heads' top-k against the target's top-k, beside
                            random heads of the same shape and a random ranking
  verify [--prompt TEXT]    max |logit difference| against `apps/apb_run --dump-logits`
  ref    --weights FILE --out FILE.safetensors
                            a small test reference (tests/data/retain_ref.safetensors): real pre-RoPE
                            q, k, v of a few tokens at three layers and the heads' scores on them,
                            computed in float64 from FILE

Backends: PyTorch (Debian: `apt-get install --no-install-recommends python3-torch`, then run with
/usr/bin/python3; on a GPU machine any PyTorch works, --device cuda). Threads: --threads (default 2).
"""
import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("train_retain: needs PyTorch (Debian: apt-get install --no-install-recommends python3-torch; "
             "run with /usr/bin/python3)")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS_TARGET = 1e-6


# ---------------------------------------------------------------------------------------------
# safetensors (read F32/F16/BF16, write F32), numpy only
# ---------------------------------------------------------------------------------------------

def st_read(path):
    """{name: float32 ndarray} of a safetensors file, and its __metadata__."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    hdr = json.loads(buf[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    out, base = {}, 8 + n
    for name, t in hdr.items():
        a, b = t["data_offsets"]
        raw = buf[base + a:base + b]
        if t["dtype"] == "F32":
            x = np.frombuffer(raw, "<f4")
        elif t["dtype"] == "F16":
            x = np.frombuffer(raw, "<f2").astype(np.float32)
        elif t["dtype"] == "BF16":
            x = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            sys.exit(f"train_retain: {path}: tensor {name}: unsupported dtype {t['dtype']}")
        out[name] = x.reshape(t["shape"])
    return out, meta


def st_write(path, tensors, meta):
    """Writes {name: ndarray} as F32 (keys sorted), with string metadata."""
    hdr, off, blobs = {"__metadata__": {k: str(v) for k, v in meta.items()}}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        hdr[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------------------------------------
# The model (float32 forward, with the pre-RoPE q, k, v and the attention targets of every layer)
# ---------------------------------------------------------------------------------------------

class Llama:
    def __init__(self, model_dir, device):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        if c.get("model_type") not in ("llama", "qwen2"):
            sys.exit(f"train_retain: unsupported model_type {c.get('model_type')!r}")
        rs = c.get("rope_scaling")
        if rs and rs.get("rope_type", rs.get("type")) not in (None, "default"):
            sys.exit("train_retain: rope_scaling is not supported by this script's forward")
        self.dir, self.dev = model_dir, device
        self.name = os.path.basename(os.path.normpath(model_dir))
        self.dim, self.L = c["hidden_size"], c["num_hidden_layers"]
        self.H = c["num_attention_heads"]
        self.Hk = c.get("num_key_value_heads") or self.H
        self.d = c.get("head_dim") or self.dim // self.H
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.n_in = (self.H + 2 * self.Hk) * self.d
        w, _ = st_read(os.path.join(model_dir, "model.safetensors"))
        self.w = {k: torch.from_numpy(np.array(v, dtype=np.float32)).to(device) for k, v in w.items()}
        self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        theta = c.get("rope_theta", 10000.0)
        self.inv_freq = torch.tensor(theta ** (-np.arange(0, self.d, 2, dtype=np.float64) / self.d),
                                     dtype=torch.float32, device=device)

    def lin(self, x, name):
        y = x @ self.w[name + ".weight"].T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def norm(self, x, name):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.w[name]

    def rope(self, x, pos):  # x [T, heads, d], rotate-half pairs (i, i + d/2)
        ang = pos[:, None].float() * self.inv_freq[None, :]
        cos, sin = torch.cos(ang).repeat(1, 2)[:, None, :], torch.sin(ang).repeat(1, 2)[:, None, :]
        h = self.d // 2
        return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin

    @torch.no_grad()
    def forward(self, ids, layer_cb=None, logits=False):
        """Runs ids [T]; layer_cb(l, qkv [T, n_in], target [Hk, T]) per layer; last-row logits."""
        T = len(ids)
        pos = torch.arange(T, device=self.dev)
        x = self.w["model.embed_tokens.weight"][torch.as_tensor(ids, device=self.dev)]
        mask = torch.full((T, T), float("-inf"), device=self.dev).triu(1)
        g = self.H // self.Hk
        for l in range(self.L):
            p = f"model.layers.{l}."
            n = self.norm(x, p + "input_layernorm.weight")
            q, k, v = (self.lin(n, p + "self_attn." + s) for s in ("q_proj", "k_proj", "v_proj"))
            qr = self.rope(q.view(T, self.H, self.d), pos).transpose(0, 1)          # [H, T, d]
            kr = self.rope(k.view(T, self.Hk, self.d), pos).transpose(0, 1)         # [Hk, T, d]
            vv = v.view(T, self.Hk, self.d).transpose(0, 1)
            kr, vv = kr.repeat_interleave(g, 0), vv.repeat_interleave(g, 0)         # [H, T, d]
            a = torch.softmax(qr @ kr.transpose(1, 2) / math.sqrt(self.d) + mask, -1)  # [H, Tq, Tk]
            if layer_cb:
                # A[i, j] = 0 for i < j, so the max over all rows is the max over later rows
                tgt = a.amax(1).view(self.Hk, g, T).amax(1)
                layer_cb(l, torch.cat([q, k, v], -1), tgt)
            o = (a @ vv).transpose(0, 1).reshape(T, self.H * self.d)
            x = x + self.lin(o, p + "self_attn.o_proj")
            m = self.norm(x, p + "post_attention_layernorm.weight")
            x = x + self.lin(torch.nn.functional.silu(self.lin(m, p + "mlp.gate_proj")) *
                             self.lin(m, p + "mlp.up_proj"), p + "mlp.down_proj")
        if logits:
            return self.norm(x[-1:], "model.norm.weight") @ self.head.T
        return None


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def tokenize(model_dir, text, special=False):
    """Token ids of text (special: with the tokenizer's own added tokens, as apb_run does)."""
    try:
        from tokenizers import Tokenizer
        return Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json")).encode(
            text, add_special_tokens=special).ids
    except ImportError:
        exe = os.path.join(REPO, "apps", "apb_tokenize")
        if not os.access(exe, os.X_OK):
            sys.exit("train_retain: needs the `tokenizers` package or a built apps/apb_tokenize")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write(text.replace("\x1e", " ") + "\n")
        try:
            out = subprocess.run([exe] + ["--add-special"] * special +
                                 [os.path.join(model_dir, "tokenizer.json"), f.name], check=True,
                                 capture_output=True, text=True).stdout
        finally:
            os.unlink(f.name)
        return [int(s) for s in out.split()]


def windows(model_dir, part, seq, count):
    """`count` windows of `seq` token ids from the training (part 0) or held-out (part 1) topics."""
    from pydoc_data.topics import topics
    names = sorted(topics)
    chosen = [n for i, n in enumerate(names) if (i % 5 == 4) == (part == 1)]
    ids = tokenize(model_dir, "\n\n".join(topics[n].strip() for n in chosen))
    n = len(ids) // seq
    if n < count:
        print(f"train_retain: the {'held-out' if part else 'training'} text has {len(ids)} tokens: "
              f"{n} windows of {seq}, not {count}", file=sys.stderr)
        count = n
    return [ids[i * seq:(i + 1) * seq] for i in range(count)]


def collect(model, wins, log_every=4):
    """Features [L, N, n_in] (float16) and log targets [L, N, Hk] (float32) of all windows."""
    L, N = model.L, sum(len(w) for w in wins)
    X = torch.empty((L, N, model.n_in), dtype=torch.float16)
    Y = torch.empty((L, N, model.Hk), dtype=torch.float32)
    t0, off = time.time(), 0
    for s, w in enumerate(wins):
        T = len(w)

        def cb(l, qkv, tgt):
            X[l, off:off + T] = qkv.to("cpu", torch.float16)
            Y[l, off:off + T] = torch.log(tgt.clamp_min(EPS_TARGET)).T.cpu()

        model.forward(w, cb)
        off += T
        if (s + 1) % log_every == 0 or s + 1 == len(wins):
            print(f"  forward {s + 1}/{len(wins)} windows, {time.time() - t0:.0f} s", file=sys.stderr)
    return X, Y


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------

def heads_apply(W1, W2, X):
    """Scores [L, N, Hk] of heads W1 [L, h, n_in], W2 [L, Hk, h] on X [L, N, n_in]."""
    return torch.bmm(torch.nn.functional.silu(torch.bmm(X, W1.transpose(1, 2))), W2.transpose(1, 2))


def smooth_l1(x, y):
    d = (x - y).abs()
    return torch.where(d < 1, 0.5 * d * d, d - 0.5).mean()


def train(args):
    torch.manual_seed(args.seed)
    model = Llama(args.model, args.device)
    t_start = time.time()
    wins = windows(args.model, 0, args.seq, args.train_samples)
    print(f"train_retain: {model.name}: {len(wins)} training windows of {args.seq} tokens", file=sys.stderr)
    X, Y = collect(model, wins)
    t_fwd = time.time() - t_start
    L, N, Hk, n_in, T = model.L, X.shape[1], model.Hk, model.n_in, args.seq
    # per-(layer, feature) RMS (folded into fc1 at the end) and per-(layer, head) target mean
    scale = torch.stack([(X[l].float() ** 2).mean(0).sqrt().clamp_min(1e-6) for l in range(L)])  # [L, n_in]
    ymean = Y.mean(1, keepdim=True)                                                            # [L, 1, Hk]
    dev = args.device
    W1 = (torch.randn(L, args.hidden, n_in) / math.sqrt(n_in)).to(dev).requires_grad_()
    W2 = (torch.randn(L, Hk, args.hidden) / math.sqrt(args.hidden)).to(dev).requires_grad_()
    opt = torch.optim.Adam([W1, W2], lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    scale_d, ymean_d = scale.to(dev), ymean.to(dev)
    n_seq, win = N // T, args.window
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(args.steps):
        # a batch: --batch random windows of --window consecutive tokens (adjacent pairs stay adjacent)
        s = torch.randint(0, n_seq, (args.batch,), generator=gen)
        o = torch.randint(0, T - win + 1, (args.batch,), generator=gen)
        idx = (s * T + o)[:, None] + torch.arange(win)[None, :]                               # [B, win]
        flat = idx.reshape(-1)
        xb = X[:, flat].to(dev).float() / scale_d[:, None, :]
        yb = Y[:, flat].to(dev) - ymean_d
        pred = heads_apply(W1, W2, xb)                                                         # [L, B*win, Hk]
        pw = pred.view(L, args.batch, win, Hk)
        loss_fit = smooth_l1(pred, yb)
        loss_smooth = ((pw[:, :, 1:] - pw[:, :, :-1]) ** 2).mean()
        loss = loss_fit + args.smooth * loss_smooth
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step + 1 == args.steps:
            print(f"  step {step:5d}  smooth-L1 {loss_fit.item():.4f}  smoothness {loss_smooth.item():.4f}  "
                  f"{time.time() - t0:.0f} s", file=sys.stderr)
    t_train = time.time() - t0
    fc1 = (W1.detach().cpu() / scale[:, None, :]).numpy()
    fc2 = W2.detach().cpu().numpy()
    tensors = {}
    for l in range(L):
        tensors[f"model.layers.{l}.self_attn.fc1.weight"] = fc1[l]
        tensors[f"model.layers.{l}.self_attn.fc2.weight"] = fc2[l]
    meta = {"format": "pt", "model": model.name, "hidden": args.hidden,
            "recipe": "tools/train_retain.py: target log(max(max_{i>=j,h in group} A[i,j], 1e-6)) "
                      "minus its per-(layer, head) mean; smooth-L1 + smoothness",
            "data": f"pydoc_data/topics.py training topics, {args.train_samples} x {args.seq} tokens",
            "steps": args.steps, "smooth": args.smooth, "lr": args.lr, "seed": args.seed,
            "forward_s": round(t_fwd), "train_s": round(t_train)}
    st_write(args.out, tensors, meta)
    print(f"train_retain: wrote {args.out} ({os.path.getsize(args.out) / 2**20:.2f} MiB): forward "
          f"{t_fwd:.0f} s, training {t_train:.0f} s", file=sys.stderr)
    del X, Y
    args.weights = args.out
    evaluate(args, model)


# ---------------------------------------------------------------------------------------------
# Evaluation: top-k recall on held-out windows
# ---------------------------------------------------------------------------------------------

def load_heads(path, model):
    t, _ = st_read(path)
    W1 = np.stack([t[f"model.layers.{l}.self_attn.fc1.weight"] for l in range(model.L)])
    W2 = np.stack([t[f"model.layers.{l}.self_attn.fc2.weight"] for l in range(model.L)])
    return torch.from_numpy(W1), torch.from_numpy(W2)


def evaluate(args, model=None):
    model = model or Llama(args.model, args.device)
    wins = windows(args.model, 1, args.seq, args.eval_samples)
    print(f"train_retain: evaluating on {len(wins)} held-out windows of {args.seq} tokens", file=sys.stderr)
    X, Y = collect(model, wins)
    W1, W2 = load_heads(args.weights, model)
    g = torch.Generator().manual_seed(args.seed + 1)
    R1 = torch.randn(W1.shape, generator=g) / math.sqrt(W1.shape[2])
    R2 = torch.randn(W2.shape, generator=g) / math.sqrt(W2.shape[2])
    L, T, Hk, skip = model.L, args.seq, model.Hk, args.skip
    scorers = {"trained": (W1, W2), "random heads": (R1, R2)}
    res = {}
    for name, (A, B) in scorers.items():
        rec = {k: np.zeros(L) for k in args.k}
        mass = {k: np.zeros(L) for k in args.k}
        for s in range(len(wins)):
            sl = slice(s * T + skip, (s + 1) * T)
            xs = X[:, sl].float()
            pred = heads_apply(A.to(xs.dtype), B.to(xs.dtype), xs)          # [L, n, Hk]
            tgt = torch.exp(Y[:, sl])                                        # max attention
            for k in args.k:
                tp = pred.topk(k, dim=1).indices
                tt = tgt.topk(k, dim=1).indices
                for l in range(L):
                    for h in range(Hk):
                        inter = np.intersect1d(tp[l, :, h].numpy(), tt[l, :, h].numpy()).size
                        rec[k][l] += inter / k
                        mass[k][l] += (tgt[l, tp[l, :, h], h].sum() / tgt[l, tt[l, :, h], h].sum()).item()
        n = len(wins) * Hk
        res[name] = {k: (rec[k] / n, mass[k] / n) for k in args.k}
    n_tok = T - skip
    for k in args.k:
        print(f"top-{k} of {n_tok} tokens per KV head (positions {skip}..{T - 1}), mean over {L} layers x "
              f"{Hk} heads x {len(wins)} windows [min layer, max layer]:")
        for name, r in res.items():
            rc, ms = r[k]
            print(f"  {name:13s} recall {rc.mean():.3f} [{rc.min():.3f}, {rc.max():.3f}]   "
                  f"target mass kept {ms.mean():.3f} [{ms.min():.3f}, {ms.max():.3f}]")
        print(f"  {'random order':13s} recall {k / n_tok:.3f} (expected)")
    return res


# ---------------------------------------------------------------------------------------------
# verify: the forward against apb_run's logits; ref: the test reference file
# ---------------------------------------------------------------------------------------------

def verify(args):
    model = Llama(args.model, args.device)
    exe = os.path.join(REPO, "apps", "apb_run")
    with tempfile.TemporaryDirectory() as td:
        dump = os.path.join(td, "logits.bin")
        subprocess.run([exe, "--model", args.model, "--prompt", args.prompt, "--max-new-tokens", "1",
                        "--method", "full", "--device", "cpu", "--dump-logits", dump, "--no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        apb = np.fromfile(dump, dtype="<f4")
    ids = tokenize(args.model, args.prompt, special=True)
    ours = model.forward(ids, logits=True)[0].cpu().numpy()
    if apb.size != ours.size:
        sys.exit(f"train_retain: apb dumped {apb.size} logits, expected {ours.size}")
    diff = np.abs(apb - ours).max()
    print(f"verify: {len(ids)} tokens, max |logit diff| {diff:.3g} (logits span {ours.min():.1f}..{ours.max():.1f}), "
          f"argmax apb {int(apb.argmax())} ours {int(ours.argmax())}")
    if diff > 1e-2 or apb.argmax() != ours.argmax():
        sys.exit("verify: FAILED")


def make_ref(args):
    model = Llama(args.model, args.device)
    ids = tokenize(args.model, args.prompt)[:args.ref_tokens]
    layers = [0, model.L // 2, model.L - 1]
    feats = {}
    model.forward(ids, lambda l, qkv, t: feats.__setitem__(l, qkv.cpu().numpy()) if l in layers else None)
    heads, _ = st_read(args.weights)
    qd, kd = model.H * model.d, model.Hk * model.d
    out = {}
    for l in layers:
        x = feats[l].astype(np.float64)
        w1 = heads[f"model.layers.{l}.self_attn.fc1.weight"].astype(np.float64)
        w2 = heads[f"model.layers.{l}.self_attn.fc2.weight"].astype(np.float64)
        h = x @ w1.T
        out[f"layer{l}.q"], out[f"layer{l}.k"], out[f"layer{l}.v"] = x[:, :qd], x[:, qd:qd + kd], x[:, qd + kd:]
        out[f"layer{l}.scores"] = (h / (1 + np.exp(-h))) @ w2.T  # float64, stored as F32
    st_write(args.out, out, {"layers": ",".join(map(str, layers)), "tokens": len(ids),
                             "weights": os.path.basename(args.weights),
                             "note": "q/k/v: pre-RoPE projections of the bundled model; scores: the "
                                     "heads in float64 (tools/train_retain.py ref)"})
    print(f"ref: wrote {args.out}: layers {layers}, {len(ids)} tokens", file=sys.stderr)


def main():
    home = os.environ.get("APB_HOME", os.path.expanduser("~/.cache/apb"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0].replace("@brief ", ""),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "eval", "verify", "ref"])
    ap.add_argument("--model", default=os.path.join(home, "models", "smollm2-135m-instruct"))
    ap.add_argument("--out", help="train: the heads file; ref: the reference file")
    ap.add_argument("--weights", help="eval / ref: a heads file")
    ap.add_argument("--hidden", type=int, default=32, help="fc1 rows (default 32)")
    ap.add_argument("--seq", type=int, default=1024, help="tokens per window (default 1024)")
    ap.add_argument("--train-samples", type=int, default=32, help="training windows (default 32)")
    ap.add_argument("--eval-samples", type=int, default=7, help="held-out windows (default 7: all of "
                    "the held-out text at --seq 1024)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=8, help="windows per step (default 8)")
    ap.add_argument("--window", type=int, default=256, help="consecutive tokens per batch window")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--smooth", type=float, default=0.0025, help="weight of the smoothness term")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, nargs="+", default=[64, 128], help="eval: top-k sizes")
    ap.add_argument("--skip", type=int, default=16, help="eval: positions excluded at each window's start")
    ap.add_argument("--prompt", default="The capital of France is Paris. The capital of Italy is Rome, "
                    "and the capital of Spain is")
    ap.add_argument("--ref-tokens", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "train":
        if not args.out:
            ap.error("train needs --out")
        train(args)
    elif args.command == "eval":
        if not args.weights:
            ap.error("eval needs --weights")
        evaluate(args)
    elif args.command == "verify":
        verify(args)
    else:
        if not args.weights or not args.out:
            ap.error("ref needs --weights and --out")
        make_ref(args)


if __name__ == "__main__":
    main()
