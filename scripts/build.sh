#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief Configure and build apb in the source tree (after scripts/setup.sh). Re-runs only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
# shellcheck disable=SC1091
. "$APB_HOME/env.sh"
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    ./autogen.sh >/dev/null 2>&1 || ./autogen.sh
fi
if [ ! -f Makefile ] || [ configure -nt Makefile ]; then
    ./configure -q ${APB_CONFIGURE_FLAGS:-}
fi
make -j"$(nproc)" all >/dev/null || make all
