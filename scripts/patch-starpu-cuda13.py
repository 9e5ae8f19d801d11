#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Make StarPU 1.3.10 (Debian source) build against CUDA 13.

CUDA 13 removed cudaDeviceProp::computeMode and the legacy <cublas.h> API.
Each edit is checked: if the source does not look as expected we stop
instead of producing a half-patched tree. Idempotent.
"""
import pathlib, re, sys

root = pathlib.Path(sys.argv[1])

def edit(rel, pairs):
    p = root / rel
    s = p.read_text()
    for old, new in pairs:
        if new in s and old not in s:
            continue  # already applied
        if old not in s:
            sys.exit(f"patch-starpu-cuda13: {rel}: expected text not found: {old[:60]!r}")
        s = s.replace(old, new)
    p.write_text(s)

edit("src/drivers/cuda/driver_cuda.c", [(
    "if (props[devid].computeMode == cudaComputeModeExclusive)",
    "int _apb_cmode = 0; cudaDeviceGetAttribute(&_apb_cmode, cudaDevAttrComputeMode, devid);\n"
    "\tif (_apb_cmode == cudaComputeModeExclusive)")])

edit("src/drivers/cuda/driver_cuda.h", [("#include <cublas.h>", "#include <cublas_v2.h>")])

edit("src/drivers/cuda/starpu_cublas.c", [
    ("#include <cublas.h>\n", ""),
    ("\t\tcublasStatus cublasst = cublasInit();\n\t\tif (STARPU_UNLIKELY(cublasst))\n"
     "\t\t\tSTARPU_CUBLAS_REPORT_ERROR(cublasst);\n", "\t\t/* legacy cublasInit() is gone in CUDA 13 */\n"),
    ("\tcublasSetKernelStream(starpu_cuda_get_local_stream());\n}", "\t/* legacy API removed in CUDA 13; per-worker handles carry the stream */\n}"),
    ("\tif (!--cublas_initialized[idx])\n\t\tcublasShutdown();\n", "\t--cublas_initialized[idx];\n"),
    ("\t\tcublasSetKernelStream(starpu_cuda_get_local_stream());\n#endif", "\t\tcublasSetStream(cublas_handles[starpu_worker_get_id_check()], starpu_cuda_get_local_stream());\n#endif"),
])
print("patch-starpu-cuda13: ok")
