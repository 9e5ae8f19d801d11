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
# print every test log's summary so the CI output shows what ran
for f in $(find tests -name '*.log' ! -name 'test-suite.log' | sort); do
    echo "---- $f"; tail -n 4 "$f"
done
if [ -f test-suite.log ]; then
    [ $rc -ne 0 ] && cat test-suite.log
    num() { sed -n "s/^# $1: *//p" test-suite.log | head -n1; }
    echo "tests: $(num PASS) passed, $(( $(num FAIL) + $(num ERROR) )) failed, $(num SKIP) skipped"
fi
exit $rc
