#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief README command 1: set everything up, build, and run apb_run on the bundled model: a question
# in the model's chat format (instruct models: tokenizer_config.json has a chat_template), then a
# short needle-in-a-haystack run with APB's sequence parallelism over 4 hosts.
#
#   scripts/demo.sh [--no-chat] [QUESTION]    (--no-chat: the question as a bare prompt)
set -euo pipefail
cd "$(dirname "$0")/.."
chat=auto
if [ "${1:-}" = --no-chat ]; then chat=no; shift; fi
bash scripts/setup.sh
bash scripts/build.sh
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
# shellcheck disable=SC1091
. "$APB_HOME/env.sh"
model=${APB_MODEL:-$APB_HOME/models/smollm2-135m-instruct}
if [ $chat = auto ]; then
    grep -qs '"chat_template"' "$model/tokenizer_config.json" && chat=yes || chat=no
fi
if [ $chat = yes ]; then
    prompt=${1:-What is the capital of France?}
    flags=(--chat)
else
    prompt=${1:-The capital of France is}
    flags=()
fi
echo "== apps/apb_run ${flags[*]} --prompt \"$prompt\" --max-new-tokens 32"
apps/apb_run --model "$model" "${flags[@]}" --prompt "$prompt" --max-new-tokens 32 --no-progress
echo
# What apb is for: a long context split over 4 hosts (APB: anchor + passing blocks), the question
# answered from it; the --summary line says how much communication overlapped computation
echo "== apps/apb_run --niah 2048 --method apb --hosts 4 --max-new-tokens 8 --summary"
apps/apb_run --model "$model" --niah 2048 --method apb --hosts 4 --max-new-tokens 8 --summary \
    --no-progress 2>&1 | grep -E "^(Ground Truth|Prediction|NIAH)|overlap [0-9.]+%|^apb_run: prefill"
