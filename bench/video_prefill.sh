#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief Spava's speed test on synthetic video embeddings (issue 18): for each frame count, a file
# from scripts/video_embeds.py (Qwen2.5-VL layout), then apb_run --embeds with each method, prefill
# + first token time from apb_run's timing line; one JSON line per run on stdout, a table on stderr.
# Random weights: the times are real, the answers are not (no vision tower here).
#
#   bench/video_prefill.sh [PRESET]     (default qwen2.5-vl-7b; tiny-vl for a CPU smoke run)
#
# Environment: FRAMES (default "16 32 64 128 256"), RES (448), HOSTS (8), METHODS
# (default "full zigzag star spava"; apb is refused with --embeds), QUESTION, EXTRA (more apb_run
# options, e.g. "--device cpu --ncpus 2"). Checked on CPU with tiny-vl only; the GPU numbers and
# the PyTorch side of the issue's table are not measured yet.
set -euo pipefail
cd "$(dirname "$0")/.."
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
# shellcheck disable=SC1091
[ -f "$APB_HOME/env.sh" ] && . "$APB_HOME/env.sh"   # absent on the GPU machine: APB_RUN, APB_PYTHON there
APB_RUN=${APB_RUN:-apps/apb_run}
APB_PYTHON=${APB_PYTHON:-python3}
PRESET=${1:-qwen2.5-vl-7b}
FRAMES=${FRAMES:-16 32 64 128 256}
RES=${RES:-448}
HOSTS=${HOSTS:-8}
METHODS=${METHODS:-full zigzag star spava}
QUESTION=${QUESTION:-What happens in this video?}
EXTRA=${EXTRA:-}
DIM=$("$APB_PYTHON" - "$PRESET" <<'PY'
import sys
dims = {"qwen2.5-vl-3b": 2048, "qwen2.5-vl-7b": 3584, "internvl3-2b": 1536, "tiny-vl": 128}
print(dims.get(sys.argv[1], 0))
PY
)
[ "$DIM" -gt 0 ] || { echo "video_prefill.sh: unknown preset '$PRESET' (qwen2.5-vl-3b, qwen2.5-vl-7b, internvl3-2b, tiny-vl)" >&2; exit 2; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '%-8s %-8s %-8s %10s %12s\n' frames tokens method "prefill s" "tokens/s" >&2
for F in $FRAMES; do
    "$APB_PYTHON" scripts/video_embeds.py "$tmp/v.st" --frames "$F" --height "$RES" --width "$RES" --dim "$DIM" 2>/dev/null
    for M in $METHODS; do
        H=$HOSTS; [ "$M" = full ] && H=1
        # shellcheck disable=SC2086
        line=$("$APB_RUN" --random-weights "$PRESET" --embeds "$tmp/v.st" --question "$QUESTION" \
               --method "$M" --hosts "$H" --max-new-tokens 1 --no-progress $EXTRA 2>&1 >/dev/null | grep "prefill .* tokens in") || {
            echo "video_prefill.sh: $M at $F frames failed" >&2; continue; }
        tok=$(printf '%s' "$line" | sed -E 's/.*prefill ([0-9]+) tokens in ([0-9.]+) s.*/\1/')
        sec=$(printf '%s' "$line" | sed -E 's/.*prefill ([0-9]+) tokens in ([0-9.]+) s.*/\2/')
        printf '{"preset": "%s", "frames": %d, "res": %d, "tokens": %d, "method": "%s", "hosts": %d, "prefill_s": %s}\n' \
            "$PRESET" "$F" "$RES" "$tok" "$M" "$H" "$sec"
        printf '%-8s %-8s %-8s %10s %12.1f\n' "$F" "$tok" "$M" "$sec" "$(echo "$tok / $sec" | bc -l)" >&2
    done
done
