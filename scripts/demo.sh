#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief README command 1: set everything up, build, and run apb_run on the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
# shellcheck disable=SC1091
. "$APB_HOME/env.sh"
prompt=${1:-The capital of France is}
echo "== apps/apb_run --prompt \"$prompt\" --max-new-tokens 32"
apps/apb_run --prompt "$prompt" --max-new-tokens 32
