#!/bin/sh
# SPDX-License-Identifier: MIT
# @brief apb_run end to end: the README example continues with sensible text, prints the timing
# line, and bad settings exit with the documented code and a clear message.
set -u
. "${top_srcdir:-.}/tests/apps/check.sh"
check "capital of France" 0 "Paris" $RUN --prompt "The capital of France is" --max-new-tokens 8 --no-progress
check "timing line" 0 "prefill .* tokens/s" $RUN --prompt "Hello" --max-new-tokens 2 --no-progress
check "chat" 0 "decode" $RUN --chat --prompt "What is 2+2?" --max-new-tokens 4 --no-progress
check "missing model dir" 3 "config.json" $RUN --model /nonexistent --prompt x
check "no prompt" 2 "exactly one of" $RUN --max-new-tokens 3
check "bad number" 2 "max-new-tokens" $RUN --prompt x --max-new-tokens -4
check "unknown option" 2 "unknown option" $RUN --prompt x --frobnicate
check "unknown sched" 2 "unknown scheduler" $RUN --prompt x --sched nosuch --max-new-tokens 1
check "context overflow" 2 "exceed" $RUN --prompt x --max-new-tokens 9000 --sched nosuch
check "missing prompt file" 3 "nofile" $RUN --prompt-file /nofile
check "anchor >= block" 2 "anchor 60 must be smaller" $RUN --niah 200 --method apb --hosts 4 --anchor 60
check "apb needs context" 2 "at least 2 prompt tokens" $RUN --prompt "x" --method apb --max-new-tokens 1
check "unknown method" 2 "unknown method" $RUN --prompt x --method foo
check "ulysses heads" 2 "must divide" $RUN --prompt "a b c d e f g h" --method ulysses --hosts 2
check "retain random weights need a file" 2 "retain-weights" $RUN --random-weights tiny --prompt-len 40 --method apb --compress retain
check "retain-weights without retain" 2 "needs --compress retain" $RUN --prompt "a b c" --method apb --retain-weights /nofile.safetensors
check "bad retain file" 3 "nofile" $RUN --prompt "a b c" --method apb --compress retain --retain-weights /nofile.safetensors
check "niah apb" 0 "Ground Truth: 1234567" $RUN --niah 600 --needle 1234567 --method apb --hosts 2 --max-new-tokens 4 --no-progress
# --max-new-tokens 0 is prefill only for every method: exit 0, the timing line, nothing printed on
# stdout beyond full's (one newline) and nothing written to --dump-logits (apb and ring once
# sampled, printed and dumped one token)
tmp0=$(mktemp -d)
P0="The quick brown fox jumps over the lazy dog again and again. The quick brown fox jumps over the lazy dog again and again. The end"
$RUN --prompt "$P0" --method full --max-new-tokens 0 --no-progress --dump-logits "$tmp0/full.bin" >"$tmp0/full.out" 2>/dev/null
for m in "full" "apb --hosts 2" "ring --hosts 2" "spava --hosts 2"; do
    nm="prefill only ${m%% *}"
    if $RUN --prompt "$P0" --method $m --max-new-tokens 0 --no-progress --dump-logits "$tmp0/l.bin" \
            >"$tmp0/out" 2>"$tmp0/err" && grep -q "decode 0 tokens" "$tmp0/err" &&
        [ -f "$tmp0/l.bin" ] && [ ! -s "$tmp0/l.bin" ] && [ ! -s "$tmp0/full.bin" ] &&
        cmp -s "$tmp0/out" "$tmp0/full.out" && [ "$(wc -c <"$tmp0/out")" -le 1 ]; then
        echo "ok   $nm"
    else
        echo "FAIL $nm: stdout $(od -c "$tmp0/out" | head -3), dump $(wc -c <"$tmp0/l.bin" 2>/dev/null) bytes"
        tail -n 5 "$tmp0/err"; fail=1
    fi
done
rm -rf "$tmp0"
# fidelity options (docs/DESIGN.md): APB's max-pool over [anchor | local] (--pool reference, the
# default) or inside the local block (--pool block), Spava's
# short chunks as min(K, 128 floor(chunk/128)) rows (--short-chunk reference: 0 rows for chunks
# under 128 tokens), each refused for the other methods
# --compress retain without --retain-weights: the heads shipped for the model's directory name
# (models/retain/), and a clear error listing the paths for a model that has none
check "retain default heads" 0 "decode" $RUN --prompt "$P0 $P0 $P0" --method apb --hosts 3 --anchor 24 --select 4 --compress retain --max-new-tokens 1 --no-progress
tmpm=$(mktemp -d)
for f in "${APB_HOME:-$HOME/.cache/apb}"/models/smollm2-135m-instruct/*; do ln -s "$f" "$tmpm/"; done
check "retain no default heads" 3 "looked for .*retain_heads.safetensors" $RUN --model "$tmpm" --prompt "$P0" --method apb --hosts 2 --compress retain --max-new-tokens 1 --no-progress
rm -rf "$tmpm"
check "pool block runs" 0 "decode" $RUN --prompt "$P0 $P0 $P0" --method apb --hosts 3 --anchor 24 --select 4 --pool block --max-new-tokens 1 --no-progress
check "pool reference runs" 0 "decode" $RUN --prompt "$P0 $P0 $P0" --method apb --hosts 3 --anchor 24 --select 4 --pool reference --max-new-tokens 1 --no-progress
check "short-chunk whole" 0 "select [1-9]" $RUN --prompt "$P0" --method spava --hosts 2 --max-new-tokens 1 --no-progress
check "short-chunk reference" 0 "select 0," $RUN --prompt "$P0" --method spava --hosts 2 --short-chunk reference --max-new-tokens 1 --no-progress
check "pool reference is apb's" 2 "applies to --method apb" $RUN --prompt x --method spava --pool reference
check "pool block is apb's" 2 "applies to --method apb" $RUN --prompt x --method star --pool block
check "short-chunk reference is spava's" 2 "applies to --method spava" $RUN --prompt x --method apb --short-chunk reference
check "bad pool" 2 "expected block or reference" $RUN --prompt x --pool sideways
# --chat without --system: the model's own template (SmolLM2's default system line, 37 prompt tokens
# as apply_chat_template gives; tests/models/test_tokenizer checks the ids)
check "chat template default" 0 " 37 context" $RUN --chat --prompt "What is 2+2?" --max-new-tokens 1 --no-progress --method full
# trace and Gantt chart of an APB run: well-formed JSON with named tasks of every host
tmp=$(mktemp -d)
check "trace" 0 "wrote trace" $RUN --prompt "The quick brown fox jumps over the lazy dog again and again" --method apb --hosts 2 --max-new-tokens 2 --trace "$tmp/t.json" --gantt "$tmp/g.svg" --no-progress
if [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" - "$tmp/t.json" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
x = [e for e in ev if e.get("ph") == "X"]
names = {e["name"] for e in x}
assert x and all(e["dur"] >= 0 and e["ts"] >= 0 for e in x), "bad events"
last = {}
for e in sorted(x, key=lambda e: e["ts"]):  # one task at a time per worker (us rounding slack)
    assert e["ts"] + 0.002 >= last.get(e["tid"], -1), f"overlap on worker {e['tid']} at {e['ts']}"
    last[e["tid"]] = e["ts"] + e["dur"]
for want in ("attention-0-h0", "attention-0-h1", "qkv-29-h1", "mlp-0-h0"):
    assert want in names, f"missing task {want}"
print(f"trace: {len(x)} task events, {len(names)} task names")
PY
then echo "ok   trace well-formed"; else echo "FAIL trace well-formed"; fail=1; fi
# bench/trace_ops.py on that trace: per worker, the ops' exclusive times and the idle time add up to
# the span, and the FLOP-counted ops (attention, qkv, mlp) get a positive rate
if [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" "${top_srcdir:-.}/bench/trace_ops.py" "$tmp/t.json" --json "$tmp/ops.json" >/dev/null &&
    "$APB_PYTHON" - "$tmp/ops.json" <<'PY'
import json, sys
tabs = json.load(open(sys.argv[1]))
assert tabs, "no worker table"
for t in tabs:
    busy = sum(o["time_s"] for o in t["ops"].values())
    assert abs(busy + t["gaps_s"] - t["span_s"]) <= 1e-6 * max(1.0, t["span_s"]) + 1e-6, (busy, t["gaps_s"], t["span_s"])
rated = {op for t in tabs for op, o in t["ops"].items() if o["flops"] > 0 and o["time_s"] > 0}
assert {"attention", "qkv", "mlp"} <= rated, f"ops with a FLOP rate: {sorted(rated)}"
print(f"trace_ops: {len(tabs)} workers, rates for {sorted(rated)}")
PY
then echo "ok   trace_ops splits the span and rates the ops"; else echo "FAIL trace_ops"; fail=1; fi
# trace_ops' GPU counters (power, SM clock: NVML samples, step functions) averaged over each op's
# exclusive time, on a synthetic trace whose means are worked out by hand
if [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" - "${top_srcdir:-.}/bench/trace_ops.py" "$tmp" <<'PY'
import json, os, subprocess, sys
ev = [{"ph": "X", "name": "mlp-0", "ts": 0, "dur": 100, "args": {"op": "mlp", "worker": "CUDA 0", "flops": 1e6}},
      {"ph": "X", "name": "attention-0", "ts": 100, "dur": 100, "args": {"op": "attention", "worker": "CUDA 0", "flops": 1e6}}]
for t, mhz, w in [(0, 1800, 600), (50, 1600, 700), (150, 1400, 690), (250, 1400, 690)]:
    ev.append({"ph": "C", "name": "GPU0 SM clock (MHz)", "ts": t, "args": {"MHz": mhz}})
    ev.append({"ph": "C", "name": "GPU0 power (W)", "ts": t, "args": {"W": w}})
p = os.path.join(sys.argv[2], "ctr.json")
json.dump({"traceEvents": ev}, open(p, "w"))
subprocess.run([sys.executable, sys.argv[1], p, "--json", p + ".out"], check=True, stdout=subprocess.DEVNULL)
o = json.load(open(p + ".out"))[0]["ops"]
# mlp [0, 100): 1800 for 50 us, 1600 for 50; attention [100, 200): 1600 for 50, 1400 for 50
assert abs(o["mlp"]["sm_mhz_mean"] - 1700) < 1e-9 and abs(o["attention"]["sm_mhz_mean"] - 1500) < 1e-9, o
assert abs(o["mlp"]["power_w_mean"] - 650) < 1e-9 and abs(o["attention"]["power_w_mean"] - 695) < 1e-9, o
PY
then echo "ok   trace_ops averages the GPU counters over each op"; else echo "FAIL trace_ops counters"; fail=1; fi
# pinned placement: every task of host h runs on CPU worker h (2 hosts, 2 CPU workers)
check "pinned placement" 0 "wrote trace" $RUN --prompt "The quick brown fox jumps over the lazy dog again and again" --method apb --hosts 2 --placement pinned --ncpus 2 --max-new-tokens 2 --trace "$tmp/p.json" --no-progress
if [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" - "$tmp/p.json" <<'PY'
import json, sys
ev = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("ph") == "X"]
hosts = [e for e in ev if e["name"].endswith(("-h0", "-h1"))]
bad = [e["name"] for e in hosts if int(e["name"][-1]) != e["tid"]]
assert hosts and not bad, f"tasks off their host's worker: {bad[:5]}"
print(f"placement: {len(hosts)} host tasks, all on their worker")
PY
then echo "ok   placement respected"; else echo "FAIL placement respected"; fail=1; fi
check "bad placement" 2 "placement" $RUN --prompt x --placement sideways
check "bad precision" 2 "precision" $RUN --prompt x --precision fp8
check "bad device" 2 "device" $RUN --prompt x --device tpu
check "bad allgather" 2 "allgather" $RUN --prompt x --allgather mpi
check "nccl allgather is apb's" 2 "method apb" $RUN --prompt "The quick brown fox jumps" --method spava --hosts 2 --allgather nccl
check "nccl allgather needs GPUs" 2 "nccl" $RUN --prompt "The quick brown fox jumps over the lazy dog again and again" --method apb --hosts 2 --device cpu --allgather nccl --max-new-tokens 1 --no-progress
check "gpu-mem needs GPUs" 2 "gpu-mem" $RUN --prompt x --device cpu --gpu-mem 4
check "bad gpu-mem" 2 "gpu-mem" $RUN --prompt x --gpu-mem 0
# worker counts beyond the machine are refused at once (--ncpus 1000 once ran 128 workers on 2 cores)
t0=$(date +%s%N)
check "ncpus beyond the machine" 2 "ncpus 1000: this process may run on" $RUN --prompt x --ncpus 1000
# (0.1 s on an idle 2-core machine; the bound leaves room for a loaded CI machine, a hang is minutes)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -lt 5000 ] && echo "ok   ncpus refused at once ($ms ms)" || { echo "FAIL ncpus refusal took $ms ms"; fail=1; }
check "tile count bounded" 2 "at most 1024" $RUN --niah 2000 --tile 1
check "prompt-len beyond context" 2 "exceeds the model's context" $RUN --random-weights tiny --prompt-len 1000000000
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    check "gpu run" 0 "GPU" $RUN --prompt "The capital of France is" --device cuda --max-new-tokens 4 --no-progress
    check "gpu run under --gpu-mem 1" 0 "GPU" $RUN --prompt "The capital of France is" --device cuda --gpu-mem 1 --max-new-tokens 4 --no-progress
else
    check "no gpu" 2 "no usable GPU" $RUN --prompt x --device cuda
fi
check "bf16 weights on CPU" 0 "bf16" $RUN --prompt "The capital of France is" --device cpu --precision bf16 --max-new-tokens 4 --no-progress
# --precision bf16: bf16 weights, and every finished layer's KV cache compacted to bf16
# (kv_compact tasks; the question pass and decoding read it in place). The logits of every step
# stay within bf16 accuracy of the fp32 run, for the full graph and the hosts' graph.
P="The capital of France is Paris. The capital of Italy is"
for m in "full" "apb --hosts 2"; do
    if $RUN --prompt "$P" --method $m --device cpu --precision fp32 --max-new-tokens 3 --no-progress \
            --dump-logits "$tmp/l32.bin" >/dev/null 2>&1 &&
        $RUN --prompt "$P" --method $m --device cpu --precision bf16 --max-new-tokens 3 --no-progress \
            --dump-logits "$tmp/l16.bin" --trace "$tmp/b.json" >/dev/null 2>&1 &&
        [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" - "$tmp/l32.bin" "$tmp/l16.bin" "$tmp/b.json" <<'PY'
import json, sys
import numpy as np
a, b = (np.fromfile(f, np.float32) for f in sys.argv[1:3])
assert a.size == b.size and a.size > 0, (a.size, b.size)
e = float(np.linalg.norm(a - b) / np.linalg.norm(a))
ev = [x for x in json.load(open(sys.argv[3]))["traceEvents"]
      if x.get("ph") == "X" and x["name"].startswith("kv_compact")]
assert ev, "no kv_compact task ran"
assert 0 < e < 0.1, f"bf16 vs fp32 logits: rel err {e}"
print(f"bf16 vs fp32 logits rel err {e:.3g}, {len(ev)} kv_compact tasks")
PY
    then echo "ok   bf16 KV cache ($m)"; else echo "FAIL bf16 KV cache ($m) (needs APB_PYTHON)"; fail=1; fi
done
# bf16: the tiles of a finished layer are compacted into ONE contiguous K/V cache per layer (the
# question pass and decoding read it as one segment per host: fewer buffers a task). Against one
# bf16 tile per tile (APB_KV_CONTIG=0) on 16-row tiles: the same keys are read in other segment
# cuts (one merged segment, or one a tile), so the softmax sums run in another order. Where only
# the question pass and decoding read the cache (apb, spava) the logits agree to float rounding;
# full's prefill reads the cache too (graph/methods/full.c), and bf16 activations carry a last-bit
# difference from layer to layer: there the two must agree as closely as each agrees with the fp32
# run (the bf16 error), and both be bf16-accurate.
PL="$P $P $P $P $P"
# APB_CACHE_FIRST=0 (full: the attention reads the fp32 tiles, compaction after it) is checked the
# same way.
for spec in "APB_KV_CONTIG=0:full --ncpus 1" "APB_KV_CONTIG=0:full" "APB_KV_CONTIG=0:apb --hosts 2 --anchor 20 --select 6" \
            "APB_KV_CONTIG=0:spava --hosts 2" "APB_CACHE_FIRST=0:full"; do
    ev=${spec%%:*} m=${spec#*:}
    if env "$ev" $RUN --prompt "$PL" --method $m --tile 16 --device cpu --precision bf16 --max-new-tokens 4 \
            --no-progress --dump-logits "$tmp/kt.bin" >/dev/null 2>&1 &&
        $RUN --prompt "$PL" --method $m --tile 16 --device cpu --precision bf16 --max-new-tokens 4 --no-progress \
            --dump-logits "$tmp/kc.bin" >/dev/null 2>&1 &&
        $RUN --prompt "$PL" --method $m --tile 16 --device cpu --precision fp32 --max-new-tokens 4 --no-progress \
            --dump-logits "$tmp/kf.bin" >/dev/null 2>&1 &&
        [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" - "$tmp/kt.bin" "$tmp/kc.bin" "$tmp/kf.bin" "${m%% *}" "$ev" <<'PY'
import sys
import numpy as np
a, b, f = (np.fromfile(x, np.float32) for x in sys.argv[1:4])
assert a.size == b.size == f.size and a.size > 0, (a.size, b.size, f.size)
rel = lambda x, y: float(np.linalg.norm(x - y) / np.linalg.norm(y))
e, ea, eb = rel(b, a), rel(a, f), rel(b, f)
print(f"{sys.argv[5]} vs default: rel err {e:.3g} (each vs fp32: {ea:.3g}, {eb:.3g})")
assert ea < 0.05 and eb < 0.05, f"bf16 vs fp32: {ea}, {eb}"
if sys.argv[4] == "full":
    assert e < 2 * max(ea, eb), f"contiguous vs per-tile {e} beyond the bf16 error {ea}, {eb}"
else:
    assert e < 1e-5, f"contiguous vs per-tile bf16 cache: rel err {e}"
PY
    then echo "ok   bf16 cache layout: $ev (${m%% *})"; else echo "FAIL bf16 cache layout: $ev ($m)"; fail=1; fi
done
# Shared anchor: in one process, hosts 2.. read host 1's anchor K/V instead of computing the same
# rows again (apb, star, spava): the logits are bitwise those of independent hosts (APB_SHARE_ANCHOR=0), with fewer
# qkv tasks in the trace.
PS="$P $P $P $P $P $P $P $P"
for m in "apb --hosts 4 --anchor 20 --select 2" "star --hosts 4" "apb --hosts 3 --anchor 20 --select 4 --precision bf16" \
         "spava --hosts 4 --anchor 16 --select 4" "spava --hosts 3 --anchor 16 --select 4 --precision bf16"; do
    if APB_SHARE_ANCHOR=0 $RUN --prompt "$PS" --method $m --tile 8 --device cpu --max-new-tokens 3 --no-progress \
            --dump-logits "$tmp/sa0.bin" --trace "$tmp/sa0.json" >/dev/null 2>&1 &&
        $RUN --prompt "$PS" --method $m --tile 8 --device cpu --max-new-tokens 3 --no-progress \
            --dump-logits "$tmp/sa1.bin" --trace "$tmp/sa1.json" >/dev/null 2>&1 &&
        [ -s "$tmp/sa0.bin" ] && cmp -s "$tmp/sa0.bin" "$tmp/sa1.bin" &&
        [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" - "$tmp/sa0.json" "$tmp/sa1.json" <<'PY'
import json, sys
n = [sum(1 for e in json.load(open(f))["traceEvents"] if e.get("ph") == "X" and e["name"].startswith("qkv"))
     for f in sys.argv[1:3]]
assert n[1] < n[0], f"qkv tasks: independent {n[0]}, shared {n[1]}"
PY
    then echo "ok   shared anchor (${m%% --*}, ${m#* --})"; else echo "FAIL shared anchor ($m)"; fail=1; fi
done
# bf16 activation tiles (graph/layer.c _apb_act_elem): the attention's o tiles and the normalized
# rows xn are written in bf16 by default, rounded as the GEMM that reads them rounds its input, so
# the logits are bitwise those of fp32 tiles (APB_BF16_ACT=0): full (one
# causal segment), apb (anchor, passing and local segments merged), ring (lse_merge into the tile).
for m in "full" "apb --hosts 2 --anchor 20 --select 6" "ring --hosts 2"; do
    ok=1
    for ev in 0 1; do
        APB_BF16_ACT=$ev $RUN --prompt "$PL" --method $m --tile 16 --device cpu --precision bf16 --max-new-tokens 3 \
            --no-progress --dump-logits "$tmp/act_$ev.bin" >/dev/null 2>&1 || ok=0
    done
    if [ $ok = 1 ] && [ -s "$tmp/act_0.bin" ] && cmp -s "$tmp/act_0.bin" "$tmp/act_1.bin"
    then echo "ok   bf16 activation tiles, same logits (${m%% *})"; else echo "FAIL bf16 activation tiles ($m)"; fail=1; fi
done
# schedulers: ours and StarPU's are listed; a run prints the summary; apb-affinity keeps every task
# of host h on its home worker without --placement pinned; a policy loads from a shared object
check "sched list ours" 0 "apb-critical" $RUN --sched list
check "sched list affinity" 0 "apb-affinity" $RUN --sched list
check "sched list starpu" 0 "modular-heft" $RUN --sched list
check "critical summary" 0 "overlap" $RUN --prompt "The quick brown fox jumps over the lazy dog again and again" --method apb --hosts 2 --max-new-tokens 2 --sched apb-critical --summary --no-progress
check "affinity trace" 0 "scheduler overhead" $RUN --prompt "The quick brown fox jumps over the lazy dog again and again" --method apb --hosts 2 --ncpus 2 --max-new-tokens 2 --sched apb-affinity --trace "$tmp/a.json" --no-progress
if [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" - "$tmp/a.json" <<'PY'
import json, sys
ev = [e for e in json.load(open(sys.argv[1]))["traceEvents"] if e.get("ph") == "X"]
home = {}
for e in ev:
    if e["name"].endswith(("-h0", "-h1")):
        home.setdefault(e["name"][-1], set()).add(e["tid"])
assert set(home) == {"0", "1"} and all(len(t) == 1 for t in home.values()) and home["0"] != home["1"], home
print("affinity: hosts on workers", home)
PY
then echo "ok   affinity keeps hosts on their worker"; else echo "FAIL affinity keeps hosts on their worker"; fail=1; fi
check "sched-lib missing" 3 "sched-lib" $RUN --prompt x --max-new-tokens 1 --sched-lib /nonexistent/policy.so
# calibration pass into a private STARPU_HOME: the regression models get written there
check "calibrate" 0 "calibration pass done" env STARPU_HOME="$tmp/home" $RUN --prompt "The quick brown fox jumps over the lazy dog again and again" --method apb --hosts 2 --max-new-tokens 1 --calibrate --no-progress
ls "$tmp"/home/.starpu/sampling/codelets/*/apb_attention.* >/dev/null 2>&1 && ls "$tmp"/home/.starpu/sampling/codelets/*/apb_mlp.* >/dev/null 2>&1 \
    && echo "ok   perfmodels stored" || { echo "FAIL perfmodels stored"; fail=1; }
# Decoding runs each layer's dense steps as fused tasks (layer; layer_pre/layer_post around the
# hosts' partial attentions): the same kernels on the same data as the separate ops, so the logits
# of every step are bitwise those of APB_FUSED_DECODE=0; in bf16 too (bf16 weight widening). `full`
# on one CPU worker: with several, CPU decoding splits its products over the workers instead.
PL="$P $P $P $P $P"
for m in "full --ncpus 1" "apb --hosts 2 --anchor 20 --select 6" "spava --hosts 2" "ring --hosts 3"; do
    for pr in fp32 bf16; do
        nm="fused decode ${m%% *} $pr"
        if APB_FUSED_DECODE=0 $RUN --prompt "$PL" --method $m --device cpu --precision $pr --max-new-tokens 4 \
                --no-progress --dump-logits "$tmp/sep.bin" >/dev/null 2>&1 &&
            $RUN --prompt "$PL" --method $m --device cpu --precision $pr --max-new-tokens 4 --no-progress \
                --dump-logits "$tmp/fus.bin" --trace "$tmp/f.json" >/dev/null 2>&1 &&
            [ -s "$tmp/sep.bin" ] && cmp -s "$tmp/sep.bin" "$tmp/fus.bin" &&
            grep -q '"name": *"layer' "$tmp/f.json"; then
            echo "ok   $nm"
        else
            echo "FAIL $nm"; fail=1
        fi
    done
done
# StarPU's own messages stay off by default: a first run (fresh STARPU_HOME) says one apb line for
# the bus calibration; --verbose (or the user's STARPU_SILENT=0) shows StarPU's
out=$(env -u STARPU_SILENT STARPU_HOME="$tmp/quiet" $RUN --prompt x --max-new-tokens 1 --no-progress 2>&1)
if printf '%s' "$out" | grep -q "first run on this machine" && ! printf '%s' "$out" | grep -q '\[starpu\]'; then
    echo "ok   starpu quiet"; else echo "FAIL starpu quiet:"; printf '%s\n' "$out"; fail=1; fi
check "starpu verbose" 0 "\[starpu\]" env -u STARPU_SILENT STARPU_HOME="$tmp/loud" $RUN --prompt x --max-new-tokens 1 --no-progress --verbose
SO=${APB_SCHED_EXAMPLE_SO:-docs/examples/.libs/apb_sched_example.so}
if [ -f "$SO" ]; then
    check "sched-lib list" 0 "example-kind-fifo" $RUN --sched list --sched-lib "$SO"
    check "sched-lib run" 0 "sched example-kind-fifo" $RUN --prompt "The capital of France is" --max-new-tokens 2 --sched-lib "$SO" --no-progress
else
    echo "skip sched-lib example ($SO not built: make check builds it)"
fi
grep -q "<svg" "$tmp/g.svg" && grep -q "attention" "$tmp/g.svg" && echo "ok   gantt svg" || { echo "FAIL gantt svg"; fail=1; }
# bench/prefill on the CPU (tiny preset): the table row of every method, and with --trace-dir a
# traced run before the timed one (its trace written, both times in the JSON)
BENCH=${APB_BENCH_PREFILL:-bench/prefill}
if [ -x "$BENCH" ] && [ -n "${APB_PYTHON:-}" ]; then
    mkdir -p "$tmp/bt"
    if "$BENCH" --device cpu --preset tiny --lengths 1024 --methods full,apb --hosts 2 --decode 2 \
            --trace-dir "$tmp/bt" --json "$tmp/bt/p.json" >"$tmp/bt/out" 2>&1 &&
        "$APB_PYTHON" - "$tmp/bt" <<'PY'
import json, os, sys
d = sys.argv[1]
runs = json.load(open(os.path.join(d, "p.json")))["runs"]
assert [r["method"] for r in runs] == ["full", "apb"], runs
for r in runs:
    assert r["time_s"] > 0 and r["traced_time_s"] > 0 and r["decode_steps"] == 2, r
    assert r["gpu_telemetry"] is None, r  # a CPU run: no GPU power/clock figures
    t = json.load(open(os.path.join(d, f"trace_{r['method']}_1024.json")))
    assert any(e.get("ph") == "X" and e["name"].startswith("attention") for e in t["traceEvents"]), r["method"]
rows = [l.split() for l in open(os.path.join(d, "out")) if l.split()[:1] == ["1024"]]
assert [x[1] for x in rows] == ["full", "apb"], rows
PY
    then echo "ok   bench/prefill cpu (table, json, traced run)"; else echo "FAIL bench/prefill cpu:"; tail -n 20 "$tmp/bt/out"; fail=1; fi
else
    echo "skip bench/prefill cpu ($BENCH not built or no python)"
fi
rm -rf "$tmp"
exit $fail
