#!/bin/sh
# SPDX-License-Identifier: MIT
# @brief apb_run --cases/--results: 3 cases in one process give one result line each, and a case's
# prediction is byte for byte what a single --prompt-file/--question run prints; malformed input
# stops with the line number (nothing run), a case that cannot run stops there keeping the results
# before it.
set -u
. "${top_srcdir:-.}/tests/apps/check.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
C1="The capital of France is Paris. The capital of Italy is Rome. The capital of Spain is Madrid."
C2="Alice keeps 3 apples in a basket; Bob keeps 5 pears in a box. The basket is red and the box is blue."
C3="The special magic number for violet is 4417. The special magic number for amber is 9023."
# JSON escapes (\n, \") must reach the model as the characters they stand for
cat >"$tmp/cases.jsonl" <<JSONL
{"id": "capital", "context": "$C1", "question": "\nQuestion: What is the capital of Italy?\nAnswer: The capital of Italy is"}

{"id": "fruit", "context": "$C2", "question": " How many apples does Alice keep? Alice keeps", "max_new_tokens": 3, "extra": [1, 2]}
{"id": "magic \"amber\"", "context": "$C3", "question": "\nWhat is the special magic number for amber? The special magic number for amber is"}
JSONL
OPTS="--method apb --hosts 2 --max-new-tokens 5"
check "three cases" 0 "3 cases in" $RUN --cases "$tmp/cases.jsonl" --results "$tmp/r.jsonl" $OPTS
check "progress per case" 0 "case 2/3 (fruit)" $RUN --cases "$tmp/cases.jsonl" --results "$tmp/r2.jsonl" $OPTS
if out=$($RUN --cases "$tmp/cases.jsonl" --results "$tmp/r3.jsonl" $OPTS --no-progress 2>&1) &&
    ! printf '%s' "$out" | grep -q "case 1/3"; then echo "ok   --no-progress"; else echo "FAIL --no-progress: $out"; fail=1; fi
# single runs of the same cases (the context as a file without a trailing newline)
printf '%s' "$C1" >"$tmp/c1.txt"
printf '%s' "$C2" >"$tmp/c2.txt"
$RUN --prompt-file "$tmp/c1.txt" --question "
Question: What is the capital of Italy?
Answer: The capital of Italy is" $OPTS --no-progress >"$tmp/s1.out" 2>/dev/null
$RUN --prompt-file "$tmp/c2.txt" --question " How many apples does Alice keep? Alice keeps" $OPTS \
    --max-new-tokens 3 --no-progress >"$tmp/s2.out" 2>/dev/null
if [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
rows = [json.loads(l) for l in open(f"{d}/r.jsonl")]
assert [r["id"] for r in rows] == ["capital", "fruit", 'magic "amber"'], rows
for r in rows:
    assert set(r) == {"id", "prediction", "prompt_tokens", "prefill_s", "decode_s"}, r
    assert isinstance(r["prediction"], str) and r["prompt_tokens"] > 10, r
    assert r["prefill_s"] > 0 and r["decode_s"] >= 0, r
assert "Rome" in rows[0]["prediction"], rows[0]
for i in (1, 2):  # stdout is the text and one newline
    single = open(f"{d}/s{i}.out", "rb").read()
    assert single.endswith(b"\n"), single
    assert rows[i - 1]["prediction"].encode() == single[:-1], (rows[i - 1]["prediction"], single)
# identical cases, identical runs: the second run of the batch gives the same results
again = [json.loads(l) for l in open(f"{d}/r2.jsonl")]
assert [r["prediction"] for r in again] == [r["prediction"] for r in rows], (again, rows)
print("predictions:", [r["prediction"] for r in rows])
PY
then echo "ok   results equal single runs"; else echo "FAIL results equal single runs (needs APB_PYTHON)"; fail=1; fi
# malformed input: named by its line, exit 4, nothing run, the results file empty
bad() { # name pattern line...
    name=$1 pat=$2; shift 2
    printf '%s\n' "$@" >"$tmp/bad.jsonl"
    rm -f "$tmp/rb.jsonl"
    check "$name" 4 "$pat" $RUN --cases "$tmp/bad.jsonl" --results "$tmp/rb.jsonl" --max-new-tokens 1
    if [ -s "$tmp/rb.jsonl" ]; then echo "FAIL $name: results written"; fail=1; fi
}
GOOD='{"id": "a", "context": "Some text.", "question": " More:"}'
bad "malformed line" "bad.jsonl: line 2: not a JSON object" "$GOOD" '{"id": "b", "context": "x",' "$GOOD"
bad "missing field" 'line 1: missing field "question"' '{"id": "a", "context": "Some text."}'
bad "missing id" 'line 1: missing field "id"' '{"context": "Some text.", "question": "q"}'
bad "wrong type" '"context" must be a string, got an integer' '{"id": "a", "context": 7, "question": "q"}'
bad "empty context" 'line 1: "context" is empty' '{"id": "a", "context": "", "question": "q"}'
bad "bad max_new_tokens" '"max_new_tokens" -3 is outside' '{"id": "a", "context": "x", "question": "q", "max_new_tokens": -3}'
bad "not an object" 'line 3: expected a JSON object, got an array' "$GOOD" "" '["a", "b"]'
bad "duplicate id" "line 3: id \"a\" repeats line 1's" "$GOOD" '{"id": "b", "context": "x", "question": "q"}' "$GOOD"
bad "NUL escape" "line 1: not a JSON object" '{"id": "a", "context": "x\u0000y", "question": "q"}'
bad "no cases" "no cases" "" "  "
# a case longer than the model's context: stops there (exit 2), the cases before it kept
{ echo "$GOOD"; echo '{"id": "b", "context": "Other text.", "question": " More:"}'
  printf '{"id": "long", "context": "'; i=0; while [ $i -lt 9000 ]; do printf 'word '; i=$((i + 1)); done
  printf '", "question": " More:"}\n'; } >"$tmp/long.jsonl"
check "case too long" 2 'long.jsonl: line 3 (case 3/3, id "long"): .*exceed the model.s context' \
    $RUN --cases "$tmp/long.jsonl" --results "$tmp/rl.jsonl" --max-new-tokens 1
n=$(wc -l <"$tmp/rl.jsonl" 2>/dev/null || echo 0)
if [ "$n" -eq 2 ]; then echo "ok   results before the failed case kept"; else echo "FAIL results kept: $n lines"; fail=1; fi
check "missing cases file" 3 "nofile.jsonl" $RUN --cases /nofile.jsonl --results "$tmp/x.jsonl"
check "unwritable results" 3 "nodir" $RUN --cases "$tmp/cases.jsonl" --results /nodir/r.jsonl
check "cases without results" 2 "go together" $RUN --cases "$tmp/cases.jsonl"
check "cases and prompt" 2 "exactly one of" $RUN --cases "$tmp/cases.jsonl" --results "$tmp/x.jsonl" --prompt x
check "cases and question" 2 "each case brings" $RUN --cases "$tmp/cases.jsonl" --results "$tmp/x.jsonl" --question x
# bench/accuracy.py: the cases are the same from the same seed, fit their length, hold their
# expected values; a tiny sweep (2 tasks, 1 length, 1 sample, full and apb) runs end to end
if [ -n "${APB_PYTHON:-}" ] && "$APB_PYTHON" -c "import tokenizers" 2>/dev/null; then
    ACC="$APB_PYTHON ${top_srcdir:-.}/bench/accuracy.py --lengths 512,1024 --samples 3 --dry-run"
    if $ACC --workdir "$tmp/a1" >/dev/null 2>&1 && $ACC --workdir "$tmp/a2" >/dev/null 2>&1 &&
        diff -r "$tmp/a1/cases" "$tmp/a2/cases" >/dev/null && "$APB_PYTHON" - "$tmp/a1/cases" <<'PY'
import glob, json, sys
files = sorted(glob.glob(sys.argv[1] + "/*.jsonl"))
assert len(files) == 8, files
for f in files:
    for line in open(f):
        c = json.loads(line)
        assert 0.8 * c["length"] < c["prompt_tokens"] <= c["length"], (c["id"], c["prompt_tokens"])
        assert all(e in c["context"] for e in c["expected"]), c["id"]
        assert c["question"] and c["max_new_tokens"] > 0, c["id"]
PY
    then echo "ok   accuracy cases deterministic"; else echo "FAIL accuracy cases deterministic"; fail=1; fi
    if "$APB_PYTHON" "${top_srcdir:-.}/bench/accuracy.py" --run "$RUN" --tasks niah_single,vartrack \
            --lengths 512 --samples 1 --methods full,apb --settings ref,hard --hosts 2 --quiet \
            --workdir "$tmp/a3" --json "$tmp/acc.json" >"$tmp/acc.out" 2>&1 &&
        grep -q "estimate" "$tmp/acc.out" && "$APB_PYTHON" - "$tmp/acc.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cells = {(c["task"], c["method"], c["setting"]) for c in d["table"]}
assert cells == {(t, m, s) for t in ("niah_single", "vartrack")
                 for m, s in (("full", "ref"), ("apb", "ref"), ("apb", "hard"))}, cells
assert all(c["n"] == 1 and 0 <= c["wilson95"][0] <= c["accuracy"] <= c["wilson95"][1] for c in d["table"])
assert len(d["results"]) == 6 and d["haystack"]["source"].startswith("CPython")
# the pairing with full: recomputed here from the per-case results
hit = {(r["method"], r["setting"], r["id"]): r["score"] == 1.0 for r in d["results"]}
pairs = {(p["method"], p["setting"]): p for p in d["paired_with_full"]}
assert set(pairs) == {("apb", "ref"), ("apb", "hard")}, pairs
for (m, s), p in pairs.items():
    ids = [i for (mm, ss, i) in hit if (mm, ss) == (m, s)]
    assert p["cases"] == len(ids) == 2, p
    assert p["lost"] == sum(hit[("full", "ref", i)] and not hit[(m, s, i)] for i in ids), p
    assert p["gained"] == sum(hit[(m, s, i)] and not hit[("full", "ref", i)] for i in ids), p
    assert 0 <= p["mcnemar_p"] <= 1 and (p["lost"] + p["gained"] > 0 or p["mcnemar_p"] == 1), p
PY
        "$APB_PYTHON" "${top_srcdir:-.}/bench/accuracy.py" --rescore "$tmp/acc.json" | grep -q "paired with full"
    then echo "ok   accuracy sweep end to end"; else echo "FAIL accuracy sweep end to end"; tail -n 20 "$tmp/acc.out"; fail=1; fi
else
    echo "skip accuracy.py checks (APB_PYTHON with tokenizers not set)"
fi
exit $fail
