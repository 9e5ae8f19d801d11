#!/bin/sh
# SPDX-License-Identifier: MIT
# @brief apb_run over StarPU-MPI ranks on this machine: for every method, `mpirun -np 2` and
# `-np 4` give bitwise the logits and tokens of the single-process run with the same hosts; only
# rank 0 prints; a missing or killed rank ends the job with a message and a non-zero exit within
# bounded time. Skips (77) only when apb was built without StarPU-MPI.
set -u
RUN=${APB_RUN:-apps/apb_run}
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
if ! $RUN --version | grep -q "StarPU-MPI: yes"; then
    echo "SKIP: apb_run built without StarPU-MPI"; exit 77
fi
if ! command -v mpirun >/dev/null 2>&1; then
    echo "FAIL: apb was built with StarPU-MPI but mpirun is not in PATH"; exit 1
fi
MPIRUN="mpirun --oversubscribe"
if mpirun --version 2>&1 | grep -q "Open MPI"; then
    MPIRUN="$MPIRUN --allow-run-as-root"
    # no InfiniBand / high-speed fabrics on a CI machine: shared memory and TCP, quietly
    export OMPI_MCA_btl="self,vader,tcp" OMPI_MCA_pml=ob1 OMPI_MCA_btl_base_warn_component_unused=0
    # components stay loaded, so that LeakSanitizer can match Open MPI's stacks (tests/lsan.supp)
    export OMPI_MCA_mca_base_component_disable_dlclose=1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
# 4 small random layers: the graph and its communication are those of a real model, ~1 s a run
# On CPU workers, bitwise: a GPU machine would otherwise run these on its GPUs, where a CPU worker
# beside them makes the placement (and the last bits) vary; GPU cases below pin hosts to GPUs.
BASE="--random-weights tiny --prompt-len 300 --tile 32 --max-new-tokens 3 --no-progress --ncpus 1"
TINY="$BASE --device cpu"

# same: name np args... -- the single-process and the np-rank run produce the same logits and ids
same() {
    name=$1 np=$2; shift 2
    if ! timeout 120 $RUN "$@" --dump-logits "$tmp/one.bin" >"$tmp/one.out" 2>"$tmp/one.err"; then
        echo "FAIL $name: single-process run failed:"; tail -n 5 "$tmp/one.err"; fail=1; return
    fi
    t0=$(date +%s)
    timeout 120 $MPIRUN -np "$np" $RUN "$@" --dump-logits "$tmp/mpi.bin" >"$tmp/mpi.out" 2>"$tmp/mpi.err"
    rc=$? dt=$(( $(date +%s) - t0 ))
    if [ $rc -ne 0 ]; then
        echo "FAIL $name: mpirun -np $np exited $rc:"
        grep -E -A12 "error|ERROR|Sanitizer|runtime error|Assertion" "$tmp/mpi.err" | head -n 60
        tail -n 8 "$tmp/mpi.err"; fail=1
    elif ! cmp -s "$tmp/one.bin" "$tmp/mpi.bin"; then
        echo "FAIL $name: mpirun -np $np logits differ from the single-process run"; fail=1
    elif ! cmp -s "$tmp/one.out" "$tmp/mpi.out"; then # rank 0 alone prints the same text
        echo "FAIL $name: mpirun -np $np stdout differs:"; cat "$tmp/one.out" "$tmp/mpi.out"; fail=1
    elif ! grep -q "$np MPI ranks" "$tmp/mpi.err" || [ "$(grep -c "prefill .* tokens/s" "$tmp/mpi.err")" -ne 1 ]; then
        echo "FAIL $name: expected one timing line from rank 0 of $np ranks:"; cat "$tmp/mpi.err"; fail=1
    else
        echo "ok   $name (np $np, ${dt}s, $(wc -c <"$tmp/mpi.bin") logit bytes, tokens: $(cat "$tmp/mpi.out"))"
    fi
}

for m in apb spava star ring zigzag ulysses; do
    same "$m W=4" 4 $TINY --method $m --hosts 4
    same "$m W=4" 2 $TINY --method $m --hosts 4
done
same "apb W=2" 2 $TINY --method apb --hosts 2 --anchor 32 --select 16
same "full" 2 $TINY --method full
same "apb placement pinned" 2 $TINY --method apb --hosts 4 --placement pinned
# the bundled model, real text: rank 0 prints the same continuation
MODEL=${APB_HOME:-$HOME/.cache/apb}/models/smollm2-135m-instruct
if [ -n "${APB_TEST_NO_MODEL:-}" ]; then # the GPU machine's quick stage (scripts/gpu-check.sh mpi)
    echo "skip bundled model (APB_TEST_NO_MODEL)"
elif [ -f "$MODEL/config.json" ]; then
    same "bundled model apb W=2" 2 --prompt "The capital of France is Paris. The capital of Italy is" \
        --method apb --hosts 2 --max-new-tokens 2 --no-progress --ncpus 1 --device cpu
else
    echo "FAIL bundled model missing: $MODEL (run scripts/setup.sh)"; fail=1
fi

# placement: with W = 4 hosts on 2 ranks, rank 0 runs the tasks of hosts 0-1 and rank 1 those of
# hosts 2-3 (each rank traces its own tasks; rank 1 writes t.rank1.json)
if timeout 120 $MPIRUN -np 2 $RUN $TINY --method ring --hosts 4 --trace "$tmp/t.json" \
        >"$tmp/tr.out" 2>&1 && [ -n "${APB_PYTHON:-}" ] &&
    "$APB_PYTHON" - "$tmp/t.json" "$tmp/t.rank1.json" <<'PY'
import json, sys
for f, want in zip(sys.argv[1:], ({"0", "1"}, {"2", "3"})):
    ev = [e for e in json.load(open(f))["traceEvents"] if e.get("ph") == "X"]
    hosts = {e["name"].rsplit("-h", 1)[1] for e in ev if "-h" in e["name"]}
    assert hosts == want, f"{f}: tasks of hosts {sorted(hosts)}, expected {sorted(want)}"
print("hosts by rank ok")
PY
then echo "ok   hosts 0-1 on rank 0, hosts 2-3 on rank 1"
else echo "FAIL hosts on ranks (needs APB_PYTHON):"; tail -n 5 "$tmp/tr.out"; fail=1; fi

# failures end the job, with a message, within bounded time
bounded() { # name pattern cmd... : non-zero exit, pattern in the output, under 60 s
    name=$1 pat=$2; shift 2
    t0=$(date +%s)
    out=$(timeout 90 "$@" 2>&1); rc=$?
    dt=$(( $(date +%s) - t0 ))
    if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ $dt -ge 60 ] || ! printf '%s' "$out" | grep -q -- "$pat"; then
        echo "FAIL $name: rc=$rc after ${dt}s, output:"; printf '%s\n' "$out" | tail -n 8; fail=1
    else
        echo "ok   $name (rc $rc after ${dt}s)"
    fi
}
# rank 1 never starts apb_run: rank 0's watchdog ends the wait for it
bounded "missing peer" "did not finish within 3 s" $MPIRUN -np 2 sh -c \
    "if [ \"\$OMPI_COMM_WORLD_RANK\" = 1 ]; then exec sleep 80; fi; exec $RUN $TINY --method apb --hosts 4 --mpi-timeout 3"
# --allgather nccl without GPUs on any rank: every rank refuses
bounded "nccl allgather over ranks without GPUs" "allgather nccl" $MPIRUN -np 2 $RUN $TINY --method apb \
    --hosts 4 --device cpu --allgather nccl
# an error on rank 0 alone (after the start of MPI): it exits at once and mpirun ends the job
bounded "error on one rank" "rank 0: error: /nonexistent" $MPIRUN -np 2 $RUN $TINY --method apb \
    --hosts 4 --dump-logits /nonexistent/logits.bin
# rank 1 is killed during the run: mpirun ends the job
bounded "killed rank" "exit\|signal\|abort" $MPIRUN -np 2 sh -c \
    "$RUN $TINY --method ring --hosts 4 --prompt-len 2000 --max-new-tokens 64 & pid=\$!;
     if [ \"\$OMPI_COMM_WORLD_RANK\" = 1 ]; then sleep 2; kill -9 \$pid; exit 9; fi; wait \$pid"
# --allgather nccl over ranks: one NCCL communicator spans the GPUs of all ranks (each rank drives
# its own GPUs: local rank i takes GPUs i, i + n, ...). Needs 2 GPUs; without GPUs every rank
# refuses with the same message (the ranks decide together, none is left waiting inside NCCL).
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
if [ "${ngpu:-0}" -ge 2 ]; then
    same "apb nccl allgather W=4 (GPUs)" 2 $BASE --method apb --hosts 4 --device cuda --allgather nccl
    same "apb nccl allgather W=8 (GPUs)" 2 $BASE --method apb --hosts 8 --device cuda --allgather nccl \
        --prompt-len 600
    # the data-dependency allgather between ranks' GPUs (StarPU-MPI moves the blocks)
    same "apb W=4 (GPUs, pinned)" 2 $BASE --method apb --hosts 4 --device cuda --placement pinned
    same "ring W=4 (GPUs, pinned)" 2 $BASE --method ring --hosts 4 --device cuda --placement pinned
    bounded "nccl: two ranks on one GPU" "one rank per GPU" $MPIRUN -np 4 $RUN $BASE --method apb \
        --hosts 4 --device cuda --allgather nccl
else
    echo "note: fewer than 2 GPUs here, so the NCCL allgather over ranks is checked only for its refusal"
fi
exit $fail
