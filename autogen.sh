#!/bin/sh
# SPDX-License-Identifier: MIT
# @brief Regenerate the build system (configure, Makefile.in).
set -e
cd "$(dirname "$0")"
mkdir -p build-aux m4
autoreconf -fi
