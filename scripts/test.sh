#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief README command 2: set everything up, build, and run the whole test suite (make check).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
# shellcheck disable=SC1091
. "$APB_HOME/env.sh"
rc=0
make -j"$(nproc)" check || rc=$?
# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, from a copy of the tracked
# sources (the tree above is configured in place). APB_SANITIZERS=0 skips it.
if [ "${APB_SANITIZERS:-1}" = 1 ] && [ $rc -eq 0 ]; then
    asan=${APB_ASAN_DIR:-$APB_HOME/build-asan}
    rm -rf "$asan"; mkdir -p "$asan"
    git ls-files -z | xargs -0 cp --parents -t "$asan"
    echo "== sanitizer build (ASan + UBSan) in $asan"
    (cd "$asan" && ./autogen.sh >/dev/null 2>&1 && ./configure -q --enable-sanitizers \
        && make -j"$(nproc)" >/dev/null && make -j"$(nproc)" check) || rc=$?
    for f in $(cd "$asan" && find tests -name '*.log' | sort); do
        echo "---- asan $f"; tail -n 2 "$asan/$f"
    done
    [ -f "$asan/test-suite.log" ] && [ $rc -ne 0 ] && cat "$asan/test-suite.log"
fi
# print every test log's summary so the CI output shows what ran
for f in $(find tests -name '*.log' ! -name 'test-suite.log' | sort); do
    echo "---- $f"; tail -n 4 "$f"
done
if [ -f test-suite.log ]; then
    [ $rc -ne 0 ] && cat test-suite.log
    # totals over the plain and the sanitizer runs
    num() { cat test-suite.log "${asan:-/dev/null}/test-suite.log" 2>/dev/null |
            sed -n "s/^# $1: *//p" | awk '{ s += $1 } END { print s + 0 }'; }
    echo "tests: $(num PASS) passed, $(( $(num FAIL) + $(num ERROR) )) failed, $(num SKIP) skipped"
fi
exit $rc
