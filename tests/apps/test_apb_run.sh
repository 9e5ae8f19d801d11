#!/bin/sh
# SPDX-License-Identifier: MIT
# @brief apb_run end to end: the README example continues with sensible text, prints the timing
# line, and bad settings exit with the documented code and a clear message.
set -u
RUN=${APB_RUN:-apps/apb_run}
fail=0
check() { # name expected_rc pattern cmd...
    name=$1 want=$2 pat=$3; shift 3
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -ne "$want" ] || ! printf '%s' "$out" | grep -q -- "$pat"; then
        echo "FAIL $name: rc=$rc (want $want), output:"; printf '%s\n' "$out" | tail -n 5; fail=1
    else
        echo "ok   $name"
    fi
}
check "capital of France" 0 "Paris" $RUN --prompt "The capital of France is" --max-new-tokens 8 --no-progress
check "timing line" 0 "prefill .* tokens/s" $RUN --prompt "Hello" --max-new-tokens 2 --no-progress
check "chat" 0 "decode" $RUN --chat --prompt "What is 2+2?" --max-new-tokens 4 --no-progress
check "missing model dir" 3 "config.json" $RUN --model /nonexistent --prompt x
check "no prompt" 2 "exactly one of" $RUN --max-new-tokens 3
check "bad number" 2 "max-new-tokens" $RUN --prompt x --max-new-tokens -4
check "unknown option" 2 "unknown option" $RUN --prompt x --frobnicate
check "unknown sched" 2 "unknown scheduler" $RUN --prompt x --sched nosuch --max-new-tokens 1
check "context overflow" 2 "exceed" $RUN --prompt x --max-new-tokens 9000
check "missing prompt file" 3 "nofile" $RUN --prompt-file /nofile
exit $fail
