#!/bin/sh
# SPDX-License-Identifier: MIT
# @brief apps/apb_tokenize against Hugging Face `tokenizers` (tests/ref/tok_ref.py) on
# tests/data/tok_corpus.txt with SmolLM2's tokenizer.json: every document must give the same ids.
#
# Runs from the build directory ($srcdir: the source directory). Environment:
#   APB_PYTHON    Python with `tokenizers` (default: $APB_HOME/venv/bin/python)
#   APB_HOME      default $HOME/.cache/apb; the model is $APB_HOME/models/smollm2-135m-instruct
#   APB_TOKENIZE  the binary (default: apps/apb_tokenize)
# Exit: 0 all documents match, 1 a difference or an apb_tokenize failure, 77 (skip) without the
# model or Python, 99 when the reference itself fails.
set -u
srcdir=${srcdir:-.}
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
model=$APB_HOME/models/smollm2-135m-instruct
tok=${APB_TOKENIZE:-apps/apb_tokenize}
py=${APB_PYTHON:-$APB_HOME/venv/bin/python}
corpus=$srcdir/tests/data/tok_corpus.txt

if [ ! -f "$model/tokenizer.json" ]; then
    echo "SKIP: no $model/tokenizer.json (scripts/setup.sh downloads the model)"
    exit 77
fi
if ! "$py" -c 'import tokenizers' 2>/dev/null; then
    echo "SKIP: '$py' cannot import tokenizers (set APB_PYTHON)"
    exit 77
fi
if [ ! -x "$tok" ]; then
    echo "FAIL: $tok is not built"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/apb_tokref.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT INT TERM

if ! "$py" "$srcdir/tests/ref/tok_ref.py" "$model/tokenizer.json" "$corpus" "$tmp/ref.txt"; then
    echo "ERROR: tests/ref/tok_ref.py failed"
    exit 99
fi
"$tok" "$model/tokenizer.json" "$corpus" >"$tmp/apb.txt"
rc=$?
if [ "$rc" -ne 0 ]; then
    echo "FAIL: $tok exited with status $rc"
    exit 1
fi
if [ ! -s "$tmp/ref.txt" ]; then
    echo "ERROR: the reference has no documents"
    exit 99
fi

# Line i of each file holds the ids of document i - 1.
awk 'NR == FNR { ref[FNR] = $0; n = FNR; next }
     { got[FNR] = $0; m = FNR }
     END {
         same = 0; shown = 0
         for (i = 1; i <= n; i++) {
             if (i <= m && got[i] == ref[i]) { same++; continue }
             if (shown++ < 5)
                 printf "  document %d differs\n    tokenizers: %.300s\n    apb:        %.300s\n", i - 1, ref[i], got[i]
         }
         if (m != n)
             printf "  apb_tokenize printed %d documents, tokenizers %d\n", m, n
         printf "tokenizer reference: %d documents, %d match\n", n, same
         exit (same == n && m == n) ? 0 : 1
     }' "$tmp/ref.txt" "$tmp/apb.txt"
