#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief Builds the libFuzzer targets and runs each for SECONDS (default 600) with seed corpora
# made from the bundled model. Findings land in fuzz/crash-*; keep each as a regression input in
# tests/data/fuzz/<target>/ once fixed.   usage: scripts/fuzz.sh [SECONDS] [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
. "$APB_HOME/env.sh"
secs=${1:-600}; shift || true
targets=${*:-safetensors config tokenizer cli embeds cases}
make -s fuzz
M=$APB_HOME/models/smollm2-135m-instruct
for t in $targets; do
    c=fuzz/corpus-$t; mkdir -p "$c"
    case $t in
    safetensors) "$APB_PYTHON" scripts/make_fuzz_seeds.py "$c" ;;
    config) cp "$M/config.json" "$c/seed-config.json"; cp tests/data/fuzz/config/* "$c/" 2>/dev/null || true ;;
    tokenizer)
        # JSON mode (first byte even): a cut-down copy of the real tokenizer.json keeps each run fast
        "$APB_PYTHON" - "$M/tokenizer.json" "$c/seed-tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
vocab = {k: v for k, v in t["model"]["vocab"].items() if v < 400}
merges = []
for m in t["model"]["merges"]:
    a, b = m.split(" ") if isinstance(m, str) else m
    if a in vocab and b in vocab and a + b in vocab:
        merges.append(m)
t["model"]["vocab"], t["model"]["merges"] = vocab, merges
t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] < 400]
open(sys.argv[2], "wb").write(b"\0" + json.dumps(t).encode())
PY
        # text mode (first byte odd): the corpus documents, encoded with the full tokenizer
        awk -v RS='\n\x1e\n' -v dir="$c" '{ f = dir "/seed-text-" NR; printf "\001%s", $0 > f; close(f) }' tests/data/tok_corpus.txt ;;
    cli) "$APB_PYTHON" - "$c" <<'PY' ;;
import os, sys
seeds = [["--prompt", "hi", "--method", "apb", "--hosts", "4", "--anchor", "64"],
         ["--niah", "4096", "--depth", "0.5", "--needle", "1234", "--trace", "t.json"],
         ["--prompt-len", "10", "--random-weights", "llama-3.1-8b", "--temperature", "0.7", "--top-p", "0.9"],
         ["--prompt", "x", "--ncpus", "1000"],
         ["--embeds", "v.safetensors", "--question", "What?", "--method", "spava", "--hosts", "8"],
         ["--cases", "c.jsonl", "--results", "r.jsonl", "--method", "apb", "--no-progress"]]
for i, a in enumerate(seeds):
    open(os.path.join(sys.argv[1], f"seed-{i}"), "wb").write(b"\0".join(x.encode() for x in a))
PY
    cases) # apb_run --cases files: what bench/accuracy.py writes, and the test's malformed lines
        printf '%s\n' '{"id": "niah_single-1024-0", "context": "Text.\nThe special magic number for violet is 4417.", "question": "\nWhat is it? It is", "max_new_tokens": 12}' \
            '' '{"id": "b", "context": "\u00e9t\u00e9 \ud83d\ude00", "question": " q", "extra": [1, {"a": null}]}' >"$c/seed-ok"
        printf '%s\n' '{"id": "a", "context": "x", "question": "q"}' '{"id": "a", "context": "x",' >"$c/seed-bad"
        printf '%s\n' '{"id": "a", "context": "x", "question": "q", "max_new_tokens": -3}' \
            '["a"]' '{"id": "a", "context": "x\u0000y", "question": "q"}' >"$c/seed-bad2" ;;
    embeds) # first byte: dim 4/8/16/576 (bits 0-1), mRoPE (bit 2); then a video file
        for dt in bf16 f16 f32; do
            "$APB_PYTHON" scripts/video_embeds.py "$c/body-$dt" --frames 2 --height 56 --width 84 --dim 8 \
                --text-before 2 --dtype "$dt" --pos-dtype i32 2>/dev/null
            { printf '\005'; cat "$c/body-$dt"; } > "$c/seed-$dt"; rm -f "$c/body-$dt"
        done ;;
    esac
    [ -d "tests/data/fuzz/$t" ] && cp tests/data/fuzz/$t/* "$c/" 2>/dev/null || true
    echo "== fuzz_$t for $secs s"
    APB_FUZZ_TOKENIZER=$M/tokenizer.json fuzz/fuzz_$t "$c" -max_total_time="$secs" -max_len=65536 \
        -artifact_prefix=fuzz/crash-$t- -print_final_stats=1 2>&1 | tail -n 12 | tee "fuzz/$t.log"
done
