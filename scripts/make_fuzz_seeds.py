#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Small safetensors seed files for the fuzzer: valid single files of several dtypes."""
import json, os, struct, sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

def write(name, tensors, meta=None):
    header, blob = {}, b""
    for tname, (dtype, shape, data) in tensors.items():
        header[tname] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob)

write("seed-f32.safetensors", {"model.norm.weight": ("F32", [4], struct.pack("<4f", 1, 2, 3, 4))})
write("seed-mixed.safetensors", {
    "a": ("BF16", [2, 2], b"\x80\x3f" * 4),
    "b": ("F16", [3], b"\x00\x3c" * 3),
    "c": ("I64", [1], struct.pack("<q", 7)),
    "empty": ("F32", [0, 5], b""),
}, meta={"format": "pt"})
