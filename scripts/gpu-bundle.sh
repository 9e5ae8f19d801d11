#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief Packs what the GPU machine lacks into .gpu/bundle.tar.xz: the CUDA build of apb (library,
# apps, tests, benchmarks) and the shared libraries it needs that are not on that machine (StarPU,
# OpenBLAS, Criterion, ...). The GPU machine has the CUDA toolkit, glibc, libstdc++, NCCL, hwloc,
# MPI and PyTorch (docs/PERFORMANCE.md, ../shared/DEVICE.md). scripts/gpu-check.sh unpacks it there.
set -euo pipefail
cd "$(dirname "$0")/.."
APB_HOME=${APB_HOME:-$HOME/.cache/apb}
# shellcheck disable=SC1091
. "$APB_HOME/env.sh"
bash scripts/build.sh
make -j"$(nproc)" $(sed -n 's/^check_PROGRAMS = //p' Makefile | head -1) >/dev/null 2>&1 || make check TESTS= >/dev/null
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/lib" "$stage/bin"
elfs=()
for f in apps/.libs/apb_run apps/.libs/apb_tokenize bench/.libs/* tests/*/.libs/*; do
    [ -f "$f" ] && file "$f" | grep -q ELF || continue
    name=$(basename "$f"); name=${name#lt-}
    cp "$f" "$stage/bin/$name"; elfs+=("$stage/bin/$name")
done
cp -P .libs/libapb.so* "$stage/lib/"
cp -P "$APB_HOME"/starpu-1.3.10/lib/libstarpu*.so* "$stage/lib/"
# Non-glibc, non-CUDA libraries the binaries load.
skip='^(libc|libm|libresolv|libpthread|libdl|librt|ld-linux.*|libstdc\+\+|libgcc_s|libcu.*|libnvJitLink|libnvrtc.*|libnccl|libz|libcrypto|libssl|libffi|libudev|libhwloc|libapb|libstarpu.*)\.so'
export LD_LIBRARY_PATH="$PWD/.libs:$LD_LIBRARY_PATH"
for e in "${elfs[@]}" "$stage"/lib/libapb.so.0 "$stage"/lib/libstarpu-1.3.so.*[0-9]; do
    ldd "$e" 2>/dev/null | awk '$3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r so path; do
    [[ $so =~ $skip ]] && continue
    cp -L "$path" "$stage/lib/$so"
done
strip --strip-unneeded "$stage"/lib/*.so* "$stage"/bin/* 2>/dev/null || true
mkdir -p .gpu
tar -C "$stage" -cf - lib bin | xz -T2 -6 > .gpu/bundle.tar.xz.tmp
mv -f .gpu/bundle.tar.xz.tmp .gpu/bundle.tar.xz  # atomic: a device call may be carrying the old one
ls -la .gpu/bundle.tar.xz
