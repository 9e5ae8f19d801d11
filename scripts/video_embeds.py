#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes a synthetic video embedding file for `apb_run --embeds` (layout: README, models/embeds.h).

F frames at H x W pixels become, by the Qwen2.5-VL rule: H, W rounded to multiples of
patch * merge (28; smart_resize), a patch grid (F / temporal_patch, H / 14, W / 14), and after the
2 x 2 spatial merge an LLM grid (T, H / 28, W / 28) of tokens, T * H/28 * W/28 rows in all
(e.g. 448 x 448: 16 x 16 = 256 tokens per 2 frames). Position ids follow transformers'
get_rope_index: N text rows before the video count 0 .. N-1 (three equal ids), the video's
(t, h, w) ids are (int(t * second_per_grid_t * tokens_per_second), h, w) + N with
second_per_grid_t = temporal_patch / fps (Qwen2.5-VL; --qwen2-vl: t alone), and text that follows
(the question, tokenized by apb_run) continues at the block's max + 1.

The rows are random (normal, std --std): there is no vision tower here; the file is for running and
timing the path, not for meaningful answers.

usage: video_embeds.py OUT.safetensors --frames F [--height 448 --width 448] --dim D
                       [--text-before N] [--dtype bf16|f16|f32] [--pos-dtype i32|i64] [--fps 2]
"""
import argparse
import json
import struct
import sys

import numpy as np


def grid(frames, height, width, patch=14, merge=2, temporal_patch=2):
    """(T, h, w) of LLM tokens and the resized (height, width), per Qwen2.5-VL's processor."""
    f = patch * merge
    hh = max(f, int(round(height / f)) * f)
    ww = max(f, int(round(width / f)) * f)
    t = max(1, (frames + temporal_patch - 1) // temporal_patch)  # the processor pads to even frames
    return t, hh // f, ww // f, hh, ww


def positions(n_text, t, gh, gw, t_scale):
    """(3, n) ids: text 0..n_text-1, then the video grid offset by n_text (get_rope_index)."""
    text = np.broadcast_to(np.arange(n_text, dtype=np.int64), (3, n_text))
    ti = (np.arange(t, dtype=np.float64) * t_scale).astype(np.int64)
    tt, hh, ww = np.meshgrid(ti, np.arange(gh), np.arange(gw), indexing="ij")
    vid = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + n_text
    return np.concatenate([text, vid], axis=1)


def write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, bytes)."""
    header, off = {}, 0
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)))
        fh.write(h)
        for _, (_, _, raw) in tensors.items():
            fh.write(raw)


def to_bf16(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16).tobytes()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--width", type=int, default=448)
    ap.add_argument("--dim", type=int, required=True, help="the model's hidden_size")
    ap.add_argument("--text-before", type=int, default=0, help="random text rows before the video")
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--tokens-per-second", type=float, default=2.0)
    ap.add_argument("--temporal-patch", type=int, default=2)
    ap.add_argument("--qwen2-vl", action="store_true", help="t ids without the seconds scale (Qwen2-VL)")
    ap.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    ap.add_argument("--pos-dtype", choices=["i32", "i64"], default="i64")
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.frames < 1 or a.dim < 1 or a.text_before < 0 or a.fps <= 0:
        ap.error("frames and dim must be >= 1, text-before >= 0, fps > 0")
    t, gh, gw, hh, ww = grid(a.frames, a.height, a.width, temporal_patch=a.temporal_patch)
    t_scale = 1.0 if a.qwen2_vl else a.temporal_patch / a.fps * a.tokens_per_second
    pos = positions(a.text_before, t, gh, gw, t_scale)
    n = pos.shape[1]
    x = np.random.default_rng(a.seed).normal(0.0, a.std, size=(n, a.dim)).astype(np.float32)
    raw = {"bf16": to_bf16, "f16": lambda v: v.astype(np.float16).tobytes(), "f32": lambda v: v.tobytes()}[a.dtype](x)
    st_dt = {"bf16": "BF16", "f16": "F16", "f32": "F32"}[a.dtype]
    p = pos.astype(np.int32 if a.pos_dtype == "i32" else np.int64)
    write_safetensors(a.out, {"embeds": (st_dt, (n, a.dim), raw),
                              "position_ids": (a.pos_dtype.upper(), (3, n), np.ascontiguousarray(p).tobytes())})
    print(f"{a.out}: {a.frames} frames at {hh}x{ww} -> grid T={t} H={gh} W={gw}, {t * gh * gw} video tokens"
          f" ({gh * gw} per {a.temporal_patch} frames) + {a.text_before} text rows = {n} rows of {a.dim};"
          f" next text position {int(pos.max()) + 1}", file=sys.stderr)


if __name__ == "__main__":
    main()
