#!/bin/sh
# SPDX-License-Identifier: MIT
# @brief apb_run --embeds (issue 18): a synthetic video embedding file (scripts/video_embeds.py) on
# the tiny-vl preset (mRoPE): spava with exact settings (every chunk selected whole) equals full,
# so do ring and zigzag; the mRoPE ids reach the graph (other t ids, other logits); bad files and
# settings exit with the documented code and a clear message. Skipped without $APB_PYTHON.
set -u
. "${top_srcdir:-.}/tests/apps/check.sh"
if [ -z "${APB_PYTHON:-}" ]; then echo "skip: APB_PYTHON not set"; exit 77; fi
S=${top_srcdir:-.}/scripts/video_embeds.py
tmp=$(mktemp -d)
close() { # name a.bin b.bin: same size, max |a - b| / max |a| < 1e-4
    if "$APB_PYTHON" - "$2" "$3" <<'PY'
import sys
import numpy as np
a, b = (np.fromfile(f, np.float32) for f in sys.argv[1:3])
sys.exit(0 if a.size and a.size == b.size and np.abs(a - b).max() <= 1e-4 * np.abs(a).max() else 1)
PY
    then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi
}
# 8 frames at 224 x 224 after 5 text rows: grid (4, 8, 8), 256 video rows, 261 in all
"$APB_PYTHON" "$S" "$tmp/v.st" --frames 8 --height 224 --width 224 --dim 128 --text-before 5 --std 1 2>/dev/null
"$APB_PYTHON" "$S" "$tmp/v2.st" --frames 8 --height 224 --width 224 --dim 128 --text-before 5 --std 1 --qwen2-vl 2>/dev/null
A="--random-weights tiny-vl --question What? --max-new-tokens 3 --no-progress"
check "embeds full" 0 "261 context" $RUN $A --embeds "$tmp/v.st" --method full --dump-logits "$tmp/full.bin"
# anchor 8 leaves 253 rows = 16 chunks of 16 (the last 13): select 16 takes every chunk whole
check "embeds spava W=8" 0 "method spava, hosts 8" $RUN $A --embeds "$tmp/v.st" --method spava --hosts 8 \
    --anchor 8 --select 16 --dump-logits "$tmp/spava.bin"
close "spava (exact settings) = full on embeddings" "$tmp/full.bin" "$tmp/spava.bin"
check "embeds zigzag" 0 "method zigzag" $RUN $A --embeds "$tmp/v.st" --method zigzag --hosts 4 --dump-logits "$tmp/zz.bin"
close "zigzag = full on embeddings" "$tmp/full.bin" "$tmp/zz.bin"
check "embeds spava defaults" 0 "method spava" $RUN $A --embeds "$tmp/v.st" --method spava --hosts 8
# Qwen2-VL's unscaled t ids (the same rows): the mRoPE ids reach the graph
check "embeds qwen2-vl ids" 0 "261 context" $RUN $A --embeds "$tmp/v2.st" --method full --dump-logits "$tmp/v2.bin"
if cmp -s "$tmp/full.bin" "$tmp/v2.bin"; then echo "FAIL mRoPE ids change the logits"; fail=1; else echo "ok   mRoPE ids change the logits"; fi
# bad files and settings
"$APB_PYTHON" "$S" "$tmp/d64.st" --frames 2 --height 56 --width 56 --dim 64 2>/dev/null
check "embeds wrong dim" 5 "hidden size is 128" $RUN $A --embeds "$tmp/d64.st"
head -c 3000 "$tmp/v.st" > "$tmp/cut.st"
check "embeds truncated" 4 "cut.st" $RUN $A --embeds "$tmp/cut.st"
"$APB_PYTHON" - "$tmp/v.st" "$tmp/nan.st" <<'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
o = 8 + n + h["embeds"]["data_offsets"][0] + 2 * (7 * 128 + 3)   # bf16 row 7, column 3
b[o:o + 2] = b"\xc0\x7f"                                          # bf16 NaN
open(sys.argv[2], "wb").write(b)
PY
check "embeds NaN row" 4 "row 7 has a non-finite value" $RUN $A --embeds "$tmp/nan.st"
check "embeds missing file" 3 "nofile" $RUN $A --embeds /nofile.safetensors
check "embeds needs question" 2 "needs --question" $RUN --random-weights tiny-vl --embeds "$tmp/v.st"
check "embeds and prompt" 2 "exactly one of" $RUN $A --embeds "$tmp/v.st" --prompt-len 4
check "embeds apb refused" 2 "question tokens in the anchors" $RUN $A --embeds "$tmp/v.st" --method apb --hosts 4
"$APB_PYTHON" - "$tmp/far.st" <<'PY'
import json, struct, sys
import numpy as np
x = np.ones((4, 128), np.float32); p = np.array([0, 1, 2, 4090], np.int64)
hj = json.dumps({"embeds": {"dtype": "F32", "shape": [4, 128], "data_offsets": [0, x.nbytes]},
                 "position_ids": {"dtype": "I64", "shape": [4], "data_offsets": [x.nbytes, x.nbytes + p.nbytes]}}).encode()
hj += b" " * ((8 - len(hj) % 8) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(hj)) + hj + x.tobytes() + p.tobytes())
PY
check "embeds ids past the context" 2 "position ids reach 4090" $RUN $A --embeds "$tmp/far.st"
check "3-D ids need mRoPE" 5 "has no mRoPE" $RUN --random-weights tiny --question What? --max-new-tokens 1 --no-progress --embeds "$tmp/v.st"
# Text as embeddings, against the token path of the bundled model (no mRoPE): the rows of the
# model's own embedding table for the tokenized context give the same logits as --prompt, bitwise
# with default ids; with every id shifted by 100 (1-D ids, shape (n,)) RoPE's relative positions
# are unchanged, so only rounding differs -- which needs the question at next_pos (rope_delta).
M=${APB_HOME:-$HOME/.cache/apb}/models/smollm2-135m-instruct
TOK=${APB_TOKENIZE:-apps/apb_tokenize}
if [ -f "$M/model.safetensors" ] && [ -x "$TOK" ]; then
    CTX="The capital of France is Paris. The capital of Germany is"
    printf '%s' "$CTX" > "$tmp/ctx.txt"
    "$TOK" --add-special "$M/tokenizer.json" "$tmp/ctx.txt" > "$tmp/ids.txt"
    "$APB_PYTHON" - "$M/model.safetensors" "$tmp/ids.txt" "$tmp/t0.st" "$tmp/t100.st" <<'PY'
import json, struct, sys
import numpy as np
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n))
e = h["model.embed_tokens.weight"]
assert e["dtype"] == "F32"
dim = e["shape"][1]
ids = [int(t) for t in open(sys.argv[2]).read().split()]
rows = []
for i in ids:
    f.seek(8 + n + e["data_offsets"][0] + 4 * dim * i)
    rows.append(np.frombuffer(f.read(4 * dim), np.float32))
x = np.stack(rows)
def write(path, tensors):
    hdr, off, blobs = {}, 0, []
    for name, (dt, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw); blobs.append(raw)
    hj = json.dumps(hdr).encode(); hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as o:
        o.write(struct.pack("<Q", len(hj))); o.write(hj); [o.write(b) for b in blobs]
write(sys.argv[3], {"embeds": ("F32", x)})
write(sys.argv[4], {"embeds": ("F32", x), "position_ids": ("I32", np.arange(len(ids), dtype=np.int32) + 100)})
PY
    B="--question  Berlin? --max-new-tokens 3 --no-progress"
    check "text tokens" 0 "context" $RUN --prompt "$CTX" $B --dump-logits "$tmp/tok.bin"
    check "text as embeds" 0 "context" $RUN --embeds "$tmp/t0.st" $B --dump-logits "$tmp/e0.bin"
    if cmp -s "$tmp/tok.bin" "$tmp/e0.bin"; then echo "ok   embeds = tokens, bitwise"; else echo "FAIL embeds = tokens, bitwise"; fail=1; fi
    check "text as embeds, ids + 100" 0 "context" $RUN --embeds "$tmp/t100.st" $B --dump-logits "$tmp/e100.bin"
    close "embeds with ids + 100 = tokens" "$tmp/tok.bin" "$tmp/e100.bin"
else
    echo "skip text-as-embeds (bundled model or apb_tokenize missing)"
fi
[ -n "${KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
exit $fail
