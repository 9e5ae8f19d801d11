# SPDX-License-Identifier: MIT
# @brief Shared by the apb_run CLI tests (sourced): RUN, ASAN_OPTIONS, and check NAME RC PATTERN
# CMD... (the command's exit code must be RC and its output must match PATTERN; sets fail=1).
RUN=${APB_RUN:-apps/apb_run}
# Under --enable-sanitizers: full stacks for LeakSanitizer, so that tests/lsan.supp can match the
# hwloc plugin frames (with fast unwinding the stack stops at the unloaded plugin).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
fail=0
check() { # name expected_rc pattern cmd...
    name=$1 want=$2 pat=$3; shift 3
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -ne "$want" ] || ! printf '%s' "$out" | grep -q -- "$pat"; then
        echo "FAIL $name: rc=$rc (want $want), output:"; printf '%s\n' "$out" | tail -n 40; fail=1
    else
        echo "ok   $name"
    fi
}
