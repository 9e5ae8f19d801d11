#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Convert a Llama-architecture GGUF file into a float32 Hugging Face model directory.

Usage: gguf_to_hf.py MODEL.gguf OUTDIR

Writes into OUTDIR:
  config.json             LlamaForCausalLM config, every value read from the GGUF metadata
  model.safetensors       every tensor dequantized to float32, HF names and [out, in] layout
  tokenizer.json          byte-level BPE for the `tokenizers` library, built from GGUF metadata
  tokenizer_config.json   bos/eos/pad strings, chat template, model_max_length
  generation_config.json  bos/eos ids

Two things llama.cpp's converter does that must be undone:
  * Q and K projection rows are permuted so that RoPE rotates adjacent pairs (interleaved,
    GPT-J style). HF Llama rotates halves (x[i], x[i + d/2]), so the rows are permuted back.
  * Tensor names are GGUF's (blk.N.attn_q.weight, ...); they are mapped to HF names.

The safetensors file is streamed tensor by tensor (header first, then each dequantized
tensor), so peak memory is about one float32 tensor rather than the whole model twice.
"""
import json
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

# GGUF token types (llama.cpp llama_token_type / gguf.TokenType).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# Per-layer GGUF tensor suffix -> HF suffix (under model.layers.N.).
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",  # only present when embeddings are not tied
}


def die(msg):
    sys.exit(f"gguf_to_hf: {msg}")


class Meta:
    """Typed access to the GGUF key/value metadata."""

    def __init__(self, reader):
        self.fields = reader.fields

    def get(self, key, default=None):
        f = self.fields.get(key)
        return default if f is None else f.contents()

    def need(self, key):
        v = self.get(key)
        if v is None:
            die(f"missing metadata key {key}")
        return v


def hf_name(gguf_name):
    """Map a GGUF tensor name to its HF name, or None when it is not a known tensor."""
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    if gguf_name.startswith("blk."):
        _, layer, suffix = gguf_name.split(".", 2)
        if suffix in LAYER_NAMES:
            return f"model.layers.{int(layer)}.{LAYER_NAMES[suffix]}"
    return None


def unpermute_rope(w, n_head):
    """Inverse of llama.cpp's Q/K permute: interleaved-pair rows -> HF rotate-half rows.

    llama.cpp: w.reshape(n_head, 2, d_out//n_head//2, d_in).swapaxes(1, 2).reshape(w.shape)
    """
    d_out = w.shape[0]
    return w.reshape(n_head, d_out // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def f32(x):
    """A float32 metadata value as the shortest Python float that rounds to it."""
    return float(str(np.float32(x)))


def build_config(m, arch, has_output):
    """LlamaForCausalLM config.json from the GGUF hyper-parameters."""
    p = arch + "."
    dim = int(m.need(p + "embedding_length"))
    n_head = int(m.need(p + "attention.head_count"))
    n_kv = int(m.get(p + "attention.head_count_kv", n_head))
    head_dim = int(m.get(p + "attention.key_length", m.get(p + "rope.dimension_count", dim // n_head)))
    tokens = m.need("tokenizer.ggml.tokens")
    bos = m.get("tokenizer.ggml.bos_token_id")
    eos = m.get("tokenizer.ggml.eos_token_id")
    pad = m.get("tokenizer.ggml.padding_token_id")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": dim,
        "intermediate_size": int(m.need(p + "feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "num_hidden_layers": int(m.need(p + "block_count")),
        "head_dim": head_dim,
        "hidden_act": "silu",
        # GGUF stores these as float32: print the shortest float32 repr (1e-05, not 9.99999974e-06).
        "rms_norm_eps": f32(m.need(p + "attention.layer_norm_rms_epsilon")),
        "rope_theta": f32(m.get(p + "rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "max_position_embeddings": int(m.need(p + "context_length")),
        "vocab_size": int(m.get(p + "vocab_size", len(tokens))),
        "tie_word_embeddings": not has_output,
        "bos_token_id": None if bos is None else int(bos),
        "eos_token_id": None if eos is None else int(eos),
        "pad_token_id": None if pad is None else int(pad),
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "float32",
    }


def pre_tokenizer_for(pre):
    """The `tokenizers` pre-tokenizer matching llama.cpp's tokenizer.ggml.pre name."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if pre == "smollm":  # SmolLM / SmolLM2: every digit alone, then the GPT-2 regex
        return {"type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    if pre in ("gpt2", "default"):  # plain GPT-2 regex
        return byte_level
    die(f"unsupported tokenizer.ggml.pre {pre!r} (add its pre-tokenizer to pre_tokenizer_for)")


def build_tokenizer(m):
    """tokenizer.json (byte-level BPE) from tokenizer.ggml.* metadata."""
    model = m.need("tokenizer.ggml.model")
    if model != "gpt2":
        die(f"only byte-level BPE tokenizers (tokenizer.ggml.model 'gpt2') are supported, got {model!r}")
    tokens = m.need("tokenizer.ggml.tokens")
    types = m.get("tokenizer.ggml.token_type", [TOKEN_NORMAL] * len(tokens))
    merges = m.need("tokenizer.ggml.merges")
    vocab = {}
    for i, t in enumerate(tokens):
        if t in vocab:
            die(f"duplicate token {t!r} at ids {vocab[t]} and {i}")
        vocab[t] = i
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer_for(m.get("tokenizer.ggml.pre", "default")),
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": list(merges),
        },
    }


def build_tokenizer_config(m, cfg):
    """tokenizer_config.json: special token strings, chat template, context length."""
    tokens = m.need("tokenizer.ggml.tokens")
    types = m.get("tokenizer.ggml.token_type", [TOKEN_NORMAL] * len(tokens))

    def tok(key):
        i = m.get(key)
        return None if i is None else tokens[int(i)]

    special = [t for t, ty in zip(tokens, types) if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
    out = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": tok("tokenizer.ggml.bos_token_id"),
        "eos_token": tok("tokenizer.ggml.eos_token_id"),
        "pad_token": tok("tokenizer.ggml.padding_token_id"),
        "unk_token": tok("tokenizer.ggml.unknown_token_id"),
        "add_bos_token": bool(m.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(m.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": bool(m.get("tokenizer.ggml.add_space_prefix", False)),
        "additional_special_tokens": special,
        "clean_up_tokenization_spaces": False,
        "model_max_length": cfg["max_position_embeddings"],
    }
    template = m.get("tokenizer.chat_template")
    if template is not None:
        out["chat_template"] = template
    return out


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_safetensors(path, entries):
    """Stream float32 tensors into a safetensors file.

    entries: list of (hf_name, shape, produce) where produce() returns the float32 array.
    The header (names, shapes, byte offsets) is written first from the shapes alone,
    then each tensor is produced and written in turn.
    """
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, _ in entries:
        nbytes = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data section 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, produce in entries:
            a = np.ascontiguousarray(produce(), dtype="<f4")
            if a.shape != tuple(shape):
                die(f"{name}: produced shape {a.shape}, expected {tuple(shape)}")
            f.write(a.tobytes())
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    src, outdir = sys.argv[1], sys.argv[2]
    reader = GGUFReader(src)
    m = Meta(reader)
    arch = m.need("general.architecture")
    if arch != "llama":
        die(f"only the llama architecture is supported, got {arch!r}")

    tensors = {t.name: t for t in reader.tensors}
    cfg = build_config(m, arch, has_output="output.weight" in tensors)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    entries = []
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            die(f"unknown tensor {t.name} ({t.tensor_type.name})")
        # GGUF shapes list the fastest dimension first ([in, out]); HF wants [out, in].
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        heads = n_head if t.name.endswith("attn_q.weight") else n_kv if t.name.endswith("attn_k.weight") else 0

        def produce(t=t, shape=shape, heads=heads):
            w = dequantize(t.data, GGMLQuantizationType(t.tensor_type)).astype(np.float32, copy=False)
            w = w.reshape(shape)
            return unpermute_rope(w, heads) if heads else w

        entries.append((name, shape, produce))

    # Sanity-check shapes against the config before writing anything big.
    want = {"model.embed_tokens.weight": (cfg["vocab_size"], cfg["hidden_size"]),
            "model.layers.0.self_attn.q_proj.weight": (n_head * cfg["head_dim"], cfg["hidden_size"]),
            "model.layers.0.self_attn.k_proj.weight": (n_kv * cfg["head_dim"], cfg["hidden_size"]),
            "model.layers.0.mlp.down_proj.weight": (cfg["hidden_size"], cfg["intermediate_size"])}
    have = {name: shape for name, shape, _ in entries}
    for name, shape in want.items():
        if have.get(name) != shape:
            die(f"{name}: shape {have.get(name)} does not match config {shape}")
    n_layers = 1 + max(int(n.split(".")[2]) for n in have if n.startswith("model.layers."))
    if n_layers != cfg["num_hidden_layers"]:
        die(f"found {n_layers} layers, metadata says {cfg['num_hidden_layers']}")

    os.makedirs(outdir, exist_ok=True)
    write_json(os.path.join(outdir, "config.json"), cfg)
    write_json(os.path.join(outdir, "generation_config.json"),
               {"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
                "pad_token_id": cfg["pad_token_id"]})
    write_json(os.path.join(outdir, "tokenizer.json"), build_tokenizer(m))
    write_json(os.path.join(outdir, "tokenizer_config.json"), build_tokenizer_config(m, cfg))
    write_safetensors(os.path.join(outdir, "model.safetensors"), entries)
    print(f"gguf_to_hf: wrote {len(entries)} tensors, {cfg['num_hidden_layers']} layers to {outdir}")


if __name__ == "__main__":
    main()
