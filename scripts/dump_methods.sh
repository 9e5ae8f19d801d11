#!/bin/bash
# SPDX-License-Identifier: MIT
# @brief --dump-logits of every method on a fixed prompt (and task names of traced runs) into OUT, with
# SHA256SUMS, for byte-for-byte comparisons of two builds: dump_methods.sh BUILD OUT; diff OUT1 OUT2.
# usage: dumps.sh BUILD_DIR OUT_DIR : --dump-logits of every method on a fixed prompt
B=$1; O=$2; mkdir -p $O
. ~/.cache/apb/env.sh
export OPENBLAS_NUM_THREADS=1
P="The quick brown fox jumps over the lazy dog. Alice has three apples and Bob has five pears. Counting all the fruit they hold together, how many pieces of fruit are there? The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. A traveller walked along the river for many days, counting stones and birds, until he reached a quiet village where the baker sold warm bread every morning. The special magic number is 4817. Remember it well, because the question at the end asks for it. What is the special magic number?"
M=~/.cache/apb/models/smollm2-135m-instruct
run() { name=$1; shift; nice $B/apps/apb_run --model $M --prompt "$P" --max-new-tokens 4 --ncpus 2 --tile 16 --dump-logits $O/$name.bin "$@" > $O/$name.out 2> $O/$name.err || echo "FAIL $name"; }
run full --method full
run full_h --method full --question " Answer:"
for meth in apb spava star ring zigzag; do run ${meth}_w2 --method $meth --hosts 2; run ${meth}_w4 --method $meth --hosts 4 --anchor 24 --select 6; done
run ulysses_w3 --method ulysses --hosts 3
run ulysses_w1 --method ulysses --hosts 1
run apb_w4_small --method apb --hosts 4 --anchor 20 --select 4 --tile 8
run apb_retain_w2 --method apb --hosts 2 --compress retain --retain-weights ${RETAIN:-/tmp/retain_smollm2.safetensors} --anchor 40 --select 16
run apb_place --method apb --hosts 4 --placement pinned --anchor 24 --select 6
run apb_lws --method apb --hosts 4 --sched apb-critical --anchor 24 --select 6
run apb_q --method apb --hosts 3 --question " What is the number?" --anchor 32 --select 8
run spava_q --method spava --hosts 2 --question " What is the number?"
rrun() { name=$1; shift; nice $B/apps/apb_run --random-weights tiny --prompt-len 70 --max-new-tokens 3 --ncpus 2 --tile 8 --dump-logits $O/$name.bin "$@" > $O/$name.out 2> $O/$name.err || echo "FAIL $name"; }
rrun rnd_full --method full
for meth in apb spava star ring zigzag ulysses; do rrun rnd_$meth --method $meth --hosts 2; done
cd $O && sha256sum *.bin > SHA256SUMS
# task-name multisets (names carry op, layer, host) of traced runs
for meth in apb spava ring ulysses; do
  nice $B/apps/apb_run --random-weights tiny --prompt-len 70 --max-new-tokens 3 --ncpus 2 --tile 8 --method $meth --hosts 2 --trace $O/tr_$meth.json >/dev/null 2>&1 || echo "FAIL tr_$meth"
  python3 -c "import json,sys; d=json.load(open('$O/tr_$meth.json')); ev=d['traceEvents'] if isinstance(d,dict) else d; print('\n'.join(sorted(e.get('name','') for e in ev if e.get('ph')=='X')))" > $O/tr_$meth.names; rm -f $O/tr_$meth.json
done
