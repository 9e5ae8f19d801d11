#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""@brief Accuracy sweep: RULER-style synthetic tasks x methods x settings x lengths through
`apps/apb_run --cases`, scored as RULER does, with 95 % Wilson intervals (docs/ACCURACY.md).

Tasks (each case deterministic from --seed, its length counted in the model's tokens):
  niah_single      one needle "The special magic number for KEY is VALUE." in natural prose
  niah_multikey    the needle among --distractors needles of other keys; asks for one key's value
  niah_multivalue  --values needles of one key with different values; asks for all of them
  vartrack         a chain "VAR X1 = 12345." "VAR X2 = VAR X1." ... (--hops) and --chains - 1
                   distractor chains; asks for every variable that holds the first chain's value
  classic          the old driver: apps/apb_run --niah (repeated filler), one process per case

Haystack: sentences of the Python reference documentation that CPython ships as
pydoc_data/topics.py (PSF License), in document order from a random start.

    bench/accuracy.py [--tasks niah_single,...] [--methods full,apb,spava,star,ring]
                      [--lengths 1024,2048] [--samples 20] [--settings ref,hard,ref-poolblock]
                      [--hosts 4] [--apb-args="--device cuda"] [--run apps/apb_run]
                      [--json bench/results/accuracy_ruler.json] [--dry-run]

The cases are written once per (task, length) to WORKDIR/cases/TASK-L.jsonl (--cases-dir reuses
files made elsewhere, e.g. on a machine with another Python); apb_run --cases runs once per
(method, setting) over all of them, or once per length when the setting's anchor/select depend on
it. An estimate of the run time is printed before any run.
"""
import argparse, hashlib, json, math, os, random, re, shlex, signal, subprocess, sys, time

TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "vartrack", "classic")
METHODS = ("full", "apb", "spava", "star", "ring", "zigzag", "ulysses")

# Keys of the needles: plain English words (RULER draws random words too).
KEYS = """amber anchor apple arrow autumn badger bamboo banner barley beacon blossom bramble breeze
bronze cactus canyon carbon castle cedar cherry cobalt comet copper coral cotton crystal dagger
desert dolphin dragon ember falcon feather fennel forest fossil garnet ginger glacier granite harbor
hazel helmet heron island ivory jasmine juniper kettle lantern lemon lilac linen lotus magnet maple
marble meadow meteor mirror nectar nickel oasis olive orchid otter paddle pebble pepper pigeon
planet pollen quartz quiver rabbit raven ribbon river saddle saffron salmon silver sparrow spruce
tangerine thistle thunder timber tulip velvet violet walnut willow winter yarrow zephyr""".split()

# The estimate's rates for the 135M model. cpu: measured in the 2026-12-02 validation sweep on
# the 2-core machine shared with another job (full, 1-2K: 324 s for 40 cases; apb/spava 20-40 %
# more). cuda: assumed, not measured (about 0.1-0.2 s a case at 1-8K on one H200).
PREFILL_TOK_S = {"cpu": 330.0, "cuda": 60000.0}   # prompt tokens/s at 1K (slower with L)
DECODE_TOK_S = {"cpu": 10.0, "cuda": 250.0}       # generated tokens/s
START_S = {"cpu": 1.0, "cuda": 4.0}                # one apb_run process (load, runtime start)


# ------------------------------------------------------------------ haystack
def haystack_sentences():
    """Sentences of CPython's pydoc_data/topics.py (the reference manual as text): prose only
    (no code, grammar, headings or lists of symbols), in document order."""
    import pydoc_data.topics as t
    out = []
    for key in sorted(t.topics):
        for para in re.split(r"\n\s*\n", t.topics[key]):
            lines = para.split("\n")
            if any(l.startswith("   ") for l in lines) or re.fullmatch(r"[*=\-]+", lines[-1].strip() or "x"):
                continue  # code, grammar, a heading
            text = " ".join(l.strip() for l in lines)
            if text.startswith("* "):
                text = text[2:]
            for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
                s = s.strip()
                if not (40 <= len(s) <= 300 and s[0].isupper() and s[-1] in ".!?"):
                    continue
                if re.search(r"[=<>{}\[\]|\\~^@#$%*]|::|__|\d{3,}", s) or s.count('"') > 2 or s.count("(") > 1:
                    continue
                out.append(s)
    return out


class Tok:
    def __init__(self, model_dir):
        from tokenizers import Tokenizer
        self.t = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.cache = {}

    def n(self, text, special=False):
        """Tokens of text as apb_run counts them (the context with the tokenizer's special
        tokens, the question without)."""
        k = (text, special)
        if k not in self.cache:
            self.cache[k] = len(self.t.encode(text, add_special_tokens=special).ids)
        return self.cache[k]


# ------------------------------------------------------------------ tasks
def number(rng):
    return str(rng.randrange(1000000, 10000000))


def var_name(rng, used):
    while True:
        v = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
        if v not in used:
            used.add(v)
            return v


def make_task(task, rng, depth0, a):
    """(intro, needles [(sentence, depth)], question, expected values, max_new_tokens)."""
    if task in ("niah_single", "niah_multikey", "niah_multivalue"):
        keys = rng.sample(KEYS, 1 + (a.distractors if task == "niah_multikey" else 0))
        key = keys[0]
        nvals = a.values if task == "niah_multivalue" else 1
        vals = []
        while len(vals) < nvals:
            v = number(rng)
            if v not in vals:
                vals.append(v)
        needles = [(f"The special magic number for {key} is {v}.", depth0 if i == 0 else rng.random())
                   for i, v in enumerate(vals)]
        for k in keys[1:]:  # distractors: other keys, other numbers
            needles.append((f"The special magic number for {k} is {number(rng)}.", rng.random()))
        intro = ("Some special magic numbers are hidden inside the following text. Memorize them: "
                 "a question about one of them follows the text.\n\n")
        if task == "niah_multivalue":
            q = (f"\n\nQuestion: What are all the special magic numbers for {key} mentioned in the text "
                 f"above?\nAnswer: The special magic numbers for {key} mentioned in the text are")
            return intro, needles, q, vals, 10 * nvals + 8
        q = (f"\n\nQuestion: What is the special magic number for {key} mentioned in the text above?\n"
             f"Answer: The special magic number for {key} mentioned in the text is")
        return intro, needles, q, vals, 12
    if task == "vartrack":
        used, needles, expected = set(), [], None
        for c in range(a.chains):
            value = str(rng.randrange(10000, 100000))
            names = [var_name(rng, used) for _ in range(a.hops + 1)]
            stmts = [f"VAR {names[0]} = {value}."] + [f"VAR {names[i]} = VAR {names[i - 1]}."
                                                      for i in range(1, len(names))]
            # in order through the text; the first chain's first statement at depth0's share
            d = sorted([depth0 * 0.5] + [rng.random() for _ in stmts[1:]]) if c == 0 else \
                sorted(rng.random() for _ in stmts)
            needles += list(zip(stmts, d))
            if c == 0:
                expected, qvalue = names, value
        intro = "Memorize and track the chain of variable assignments hidden in the following text.\n\n"
        q = (f"\n\nQuestion: Which variables are assigned the value {qvalue}, directly or through "
             f"other variables, in the text above?\nAnswer: The chain of assignments of the value "
             f"{qvalue} is: VAR")
        return intro, needles, q, expected, 6 * len(expected) + 8
    raise ValueError(task)


def make_case(task, L, i, a, sents, tok):
    rng = random.Random(f"{a.seed}/{task}/{L}/{i}")
    depth0 = (i + rng.random()) / a.samples  # the target's depth, stratified over the samples
    intro, needles, q, expected, max_new = make_task(task, rng, depth0, a)
    fixed = tok.n(intro, True) + tok.n(q) + sum(tok.n(" " + s) for s, _ in needles) + 2
    start = rng.randrange(len(sents))
    hay, n = [], fixed
    while n < L:
        s = sents[(start + len(hay)) % len(sents)]
        hay.append(s)
        n += tok.n(" " + s)
    while True:
        body = list(hay)
        # needles at sentence boundaries, later depths first so that indices stay valid
        for s, d in sorted(needles, key=lambda x: -x[1]):
            body.insert(min(len(hay), int(round(d * len(hay)))), s)
        ctx = intro + " ".join(body)
        total = tok.n(ctx, True) + tok.n(q)
        if total <= L or not hay:
            break
        hay.pop()
    return dict(id=f"{task}-{L}-{i}", context=ctx, question=q, max_new_tokens=max_new, task=task,
                length=L, prompt_tokens=total, expected=expected,
                depths=[round(d, 4) for _, d in needles])


# ------------------------------------------------------------------ settings
def setting_args(setting, method, L, hosts):
    """apb_run options of a setting for a method, or None when the setting does not apply.
    ref: the defaults (apb anchor L/32, select L/64 in multiples of 64; spava L/64, L/128).
    hard: half those ratios, unrounded (apb anchor max(L/64, 64) so that it holds the question,
    select L/128; spava anchor L/128, select L/256). -poolblock: apb's --pool block (the
    default is the reference rule since 2026-12-02); -poolref: --pool reference, the setting the
    earlier tables ran when block was the default.
    -retain: apb compressing with the trained Locret retaining heads (--compress retain, the
    heads shipped in models/retain/) instead of query-aware selection."""
    base, _, mod = setting.partition("-")
    if base not in ("ref", "hard") or mod not in ("", "poolref", "poolblock", "retain"):
        raise SystemExit(f"accuracy: unknown setting '{setting}' (ref, hard, ref-poolblock, "
                         "hard-poolblock, ref-poolref, hard-poolref, ref-retain, hard-retain)")
    if mod and method != "apb":
        return None
    if base == "hard" and method not in ("apb", "spava"):
        return None
    args = ["--pool", "reference"] if mod == "poolref" else ["--pool", "block"] if mod == "poolblock" else ["--compress", "retain"] if mod == "retain" else []
    if base == "hard" and L is not None:
        if method == "apb":
            args += ["--anchor", str(max(L // 64, 64)), "--select", str(max(L // 128, 1))]
        else:
            args += ["--anchor", str(max(L // 128, 16)), "--select", str(max(L // 256, 1))]
    return args


def depends_on_length(setting):
    return setting.startswith("hard")


# ------------------------------------------------------------------ scoring
def score(pred, expected):
    """RULER's string_match_all: the fraction of expected values found in the prediction."""
    p = pred.lower()
    return sum(e.lower() in p for e in expected) / len(expected)


def wilson(k, n, z=1.96):
    if n == 0:
        return (0.0, 1.0)
    ph = k / n
    den = 1 + z * z / n
    c = (ph + z * z / (2 * n)) / den
    h = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def paired(results, base="full"):
    """Per (method, setting): the cases that method and `base` (setting ref) both ran, the hits each
    scored on them, the cases `base` hit and the method missed (lost) and the reverse (gained), and
    the exact two-sided McNemar p-value (binomial on the discordant pairs). Pairing the same cases
    separates methods that the per-cell intervals cannot (20 samples a cell)."""
    hit = {}
    for r in results:
        hit.setdefault((r["method"], r["setting"]), {})[(r["task"], r["length"], r["id"])] = r["score"] == 1.0
    ref = hit.get((base, "ref"), {})
    out = []
    for (m, st), h in sorted(hit.items()):
        if (m, st) == (base, "ref"):
            continue
        ids = [i for i in h if i in ref]
        if not ids:
            continue
        lost = sum(ref[i] and not h[i] for i in ids)
        gained = sum(h[i] and not ref[i] for i in ids)
        n = lost + gained
        pv = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(lost, gained) + 1)) / 2 ** n) if n else 1.0
        out.append(dict(method=m, setting=st, cases=len(ids), hits=sum(h[i] for i in ids),
                        base_hits=sum(ref[i] for i in ids), lost=lost, gained=gained,
                        mcnemar_p=round(pv, 4)))
    return out


def print_paired(pairs):
    if not pairs:
        return
    print("\naccuracy: paired with full on the same cases (all tasks and lengths): hits, cases full "
          "hit and the method missed (lost), the reverse (gained), exact McNemar p")
    print(f"  {'method':7s} {'setting':12s} {'cases':>6s} {'hits':>5s} {'full':>5s} {'lost':>5s} "
          f"{'gained':>6s} {'p':>7s}")
    for c in pairs:
        print(f"  {c['method']:7s} {c['setting']:12s} {c['cases']:6d} {c['hits']:5d} {c['base_hits']:5d} "
              f"{c['lost']:5d} {c['gained']:6d} {c['mcnemar_p']:7.3f}")


# ------------------------------------------------------------------ main
def main():
    # SIGTERM (timeout, a job limit) ends the running apb_run too: subprocess.run kills its child
    # when an exception leaves it, and --resume continues from the results written so far
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="apps/apb_run", help="apb_run binary (or a command line)")
    ap.add_argument("--tasks", default="niah_single,niah_multikey,niah_multivalue,vartrack")
    ap.add_argument("--methods", default="full,apb,spava,star,ring")
    ap.add_argument("--lengths", default="1024,2048,4096,8000")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--settings", default="ref,hard,ref-poolblock",
                    help="ref, hard, ref-poolblock, hard-poolblock, ref-poolref, hard-poolref, ref-retain, "
                         "hard-retain (see setting_args)")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--distractors", type=int, default=3, help="niah_multikey: needles of other keys")
    ap.add_argument("--values", type=int, default=3, help="niah_multivalue: values of the key")
    ap.add_argument("--hops", type=int, default=1, help="vartrack: assignments after the first")
    ap.add_argument("--chains", type=int, default=1, help="vartrack: chains (1 asked, the rest distract)")
    ap.add_argument("--apb-args", default="", help="more apb_run options for every run, e.g. '--device cuda'")
    ap.add_argument("--model", default=None, help="model directory (default: the bundled model)")
    ap.add_argument("--workdir", default="bench/results/work", help="cases and raw results")
    ap.add_argument("--cases-dir", default=None, help="reuse TASK-L.jsonl files from this directory")
    ap.add_argument("--json", default="bench/results/accuracy_ruler.json")
    ap.add_argument("--dry-run", action="store_true", help="write the cases, print the estimate, stop")
    ap.add_argument("--quiet", action="store_true", help="no per-case progress from apb_run")
    ap.add_argument("--resume", action="store_true",
                    help="keep the results in WORKDIR of an interrupted sweep, run the missing cases")
    ap.add_argument("--rescore", metavar="JSON",
                    help="print the tables (and the pairing with full) of a sweep's JSON; nothing runs")
    a = ap.parse_args()
    if a.rescore:
        with open(a.rescore) as f:
            res = json.load(f)["results"]
        order = lambda key, xs: sorted({r[key] for r in xs}, key=lambda v: (str(type(v)), v))
        meths = [m for m in METHODS if m in {r["method"] for r in res}]
        print_table(cells_table(res), [t for t in TASKS if t in {r["task"] for r in res}], meths,
                    order("setting", res), order("length", res))
        print_paired(paired(res))
        return

    tasks = a.tasks.split(",")
    methods = a.methods.split(",")
    lengths = [int(x) for x in a.lengths.split(",")]
    settings = a.settings.split(",")
    for t in tasks:
        if t not in TASKS:
            sys.exit(f"accuracy: unknown task '{t}' ({', '.join(TASKS)})")
    for m in methods:
        if m not in METHODS:
            sys.exit(f"accuracy: unknown method '{m}' ({', '.join(METHODS)})")
    apb_args = shlex.split(a.apb_args)
    device = "cuda" if re.search(r"--device[= ]cuda", a.apb_args) else "cpu"
    run_cmd = shlex.split(a.run)
    model = a.model or os.path.join(os.environ.get("APB_HOME", os.path.expanduser("~/.cache/apb")),
                                    "models", "smollm2-135m-instruct")
    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")

    # the runs: (method, setting, args, lengths or None = all in one process)
    runs = []
    for m in methods:
        # settings change nothing for the exact methods and star: they run once, as "ref"
        mine = [st for st in settings if setting_args(st, m, None, a.hosts) is not None] \
            if m in ("apb", "spava") else ["ref"]
        for st in mine:
            if depends_on_length(st):
                runs += [(m, st, L) for L in lengths]
            else:
                runs.append((m, st, None))

    if all(t == "classic" for t in tasks):
        runs = []  # classic runs one apb_run --niah per case
    # cases, once per (task, length)
    os.makedirs(os.path.join(a.workdir, "cases"), exist_ok=True)
    cases_dir = a.cases_dir or os.path.join(a.workdir, "cases")
    ruler = [t for t in tasks if t != "classic"]
    cases, files, hay = {}, {}, None
    for t in ruler:
        for L in lengths:
            f = os.path.join(cases_dir, f"{t}-{L}.jsonl")
            if not a.cases_dir:
                if hay is None:
                    sents = haystack_sentences()
                    tok = Tok(model)
                    hay = dict(source="CPython pydoc_data/topics.py (PSF License)",
                               python=sys.version.split()[0], sentences=len(sents),
                               sha256=hashlib.sha256("\n".join(sents).encode()).hexdigest()[:16])
                    print(f"accuracy: haystack {hay['sentences']} sentences of {hay['source']}, "
                          f"Python {hay['python']}, sha256 {hay['sha256']}", file=sys.stderr)
                with open(f, "w") as fh:
                    for i in range(a.samples):
                        c = make_case(t, L, i, a, sents, tok)
                        c["haystack"] = hay
                        fh.write(json.dumps(c) + "\n")
            with open(f) as fh:
                rows = [json.loads(l) for l in fh if l.strip()]
            if len(rows) < a.samples:
                sys.exit(f"accuracy: {f} has {len(rows)} cases, fewer than --samples {a.samples}")
            rows = rows[:a.samples]
            if hay is None:  # --cases-dir: the haystack the cases were made from
                hay = rows[0].get("haystack") if rows else None
            files[(t, L)] = f
            for r in rows:
                cases[r["id"]] = r

    # estimate
    def case_s(L, new):
        return L / PREFILL_TOK_S[device] * (1 + L / 8192) + new / DECODE_TOK_S[device]
    est = 0.0
    for m, st, Lr in runs:
        est += START_S[device]
        est += sum(case_s(c["length"], c["max_new_tokens"]) for c in cases.values()
                   if Lr is None or c["length"] == Lr)
    n_classic = len(lengths) * a.samples if "classic" in tasks else 0
    est += n_classic * len(methods) * (START_S[device] + case_s(max(lengths), 12))
    n_runs = len(runs) + n_classic * len(methods)
    print(f"accuracy: {len(cases)} cases ({', '.join(ruler) or 'none'}; lengths {a.lengths}; "
          f"{a.samples} samples) x {len(runs)} (method, setting) runs"
          + (f" + {n_classic * len(methods)} classic runs" if n_classic else "")
          + f": estimate {est / 60:.1f} min on {device} ({n_runs} apb_run processes)", file=sys.stderr)
    for m, st, Lr in runs:
        print(f"  run: {m:6s} {st:12s} {'all lengths' if Lr is None else f'L={Lr}'}", file=sys.stderr)
    if a.dry_run:
        return

    # runs
    results, t_start = [], time.time()
    for m, st, Lr in runs:
        sel = [L for L in lengths if Lr is None or L == Lr]
        fin = os.path.join(a.workdir, f"cases-{'all' if Lr is None else Lr}.jsonl")
        with open(fin, "w") as fo:
            for t in ruler:
                for L in sel:
                    with open(files[(t, L)]) as fh:
                        for k, line in enumerate(fh):
                            if k < a.samples:
                                fo.write(line)
        fout = os.path.join(a.workdir, f"results-{m}-{st}-{'all' if Lr is None else Lr}.jsonl")
        with open(fin) as fh:
            want = [json.loads(l)["id"] for l in fh if l.strip()]
        done = set()
        if a.resume and os.path.exists(fout):
            with open(fout) as fh:  # lines of an interrupted run: complete ones only
                for l in fh:
                    try:
                        done.add(json.loads(l)["id"])
                    except ValueError:
                        break
        todo = [i for i in want if i not in done]
        t0 = time.time()
        if not todo:
            print(f"accuracy: {m} {st}: kept {fout}", file=sys.stderr)
        else:
            fres = fout
            if done:  # only the missing cases, their results appended
                print(f"accuracy: {m} {st}: {len(done)} of {len(want)} cases kept", file=sys.stderr)
                with open(fin) as fh, open(fin + ".todo", "w") as fo:
                    for l in fh:
                        if l.strip() and json.loads(l)["id"] in todo:
                            fo.write(l)
                fin, fres = fin + ".todo", fout + ".todo"
            cmd = run_cmd + ["--cases", fin, "--results", fres, "--method", m] + \
                (["--hosts", str(a.hosts)] if m != "full" else []) + setting_args(st, m, Lr, a.hosts) + \
                apb_args + (["--no-progress"] if a.quiet else [])
            print(f"accuracy: {shlex.join(cmd)}", file=sys.stderr)
            p = subprocess.run(cmd, env=env)
            if fres != fout:
                with open(fout) as fh:
                    lines = []
                    for l in fh:
                        try:
                            json.loads(l)
                            lines.append(l)
                        except ValueError:
                            break
                if os.path.exists(fres):
                    with open(fres) as fh:
                        lines += fh.readlines()
                with open(fout, "w") as fo:
                    fo.writelines(lines)
            if p.returncode != 0:
                write_json(a, hay, results, tasks, methods, settings, lengths, partial=True)
                sys.exit(f"accuracy: apb_run failed ({p.returncode}); results so far in {a.json} "
                         f"(--resume continues)")
        with open(fout) as fh:
            for line in fh:
                r = json.loads(line)
                c = cases[r["id"]]
                results.append(dict(task=c["task"], length=c["length"], method=m,
                                    setting=st, id=r["id"], expected=c["expected"],
                                    prediction=r["prediction"], score=score(r["prediction"], c["expected"]),
                                    prompt_tokens=r["prompt_tokens"], prefill_s=r["prefill_s"],
                                    decode_s=r["decode_s"]))
        print(f"accuracy: {m} {st}: {time.time() - t0:.1f} s", file=sys.stderr)
    if "classic" in tasks:
        for m in methods:
            for L in lengths:
                for i in range(a.samples):
                    depth = (i + 0.5) / a.samples
                    cmd = run_cmd + ["--niah", str(L), "--depth", f"{depth:.4f}", "--seed", str(a.seed + i),
                                     "--method", m, "--hosts", str(a.hosts), "--max-new-tokens", "12",
                                     "--no-progress"] + apb_args
                    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if p.returncode != 0:
                        sys.exit(f"accuracy: {shlex.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
                    gt = re.search(r"Ground Truth: (\d+)", p.stdout).group(1)
                    pred = re.search(r"Prediction:(.*)", p.stdout).group(1).strip()
                    results.append(dict(task="classic", length=L, method=m, setting="ref",
                                        id=f"classic-{L}-{i}", expected=[gt], prediction=pred,
                                        score=score(pred, [gt]), depth=depth))
    print(f"accuracy: runs took {(time.time() - t_start) / 60:.1f} min (estimate {est / 60:.1f})",
          file=sys.stderr)
    write_json(a, hay, results, tasks, methods, settings, lengths)


def cells(results):
    out = {}
    for r in results:
        out.setdefault((r["task"], r["method"], r["setting"], r["length"]), []).append(r["score"])
    return out


def cells_table(results):
    table = []
    for (t, m, st, L), sc in sorted(cells(results).items()):
        hits = sum(s == 1.0 for s in sc)
        lo, hi = wilson(hits, len(sc))
        table.append(dict(task=t, method=m, setting=st, length=L, n=len(sc), hits=hits,
                          accuracy=hits / len(sc), wilson95=[round(lo, 3), round(hi, 3)],
                          ruler_score=round(sum(sc) / len(sc), 4)))
    return table


def write_json(a, hay, results, tasks, methods, settings, lengths, partial=False):
    table = cells_table(results)
    print_table(table, tasks, methods, settings, lengths)
    pairs = paired(results)
    print_paired(pairs)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(dict(command=shlex.join(sys.argv), date=time.strftime("%Y-%m-%d %H:%M"), commit=commit,
                       partial=partial, haystack=hay, hosts=a.hosts, seed=a.seed, samples=a.samples,
                       apb_args=a.apb_args,
                       difficulty=dict(distractors=a.distractors, values=a.values, hops=a.hops,
                                       chains=a.chains),
                       table=table, paired_with_full=pairs, results=results), f, indent=1)
    print(f"wrote {a.json}")


def print_table(table, tasks, methods, settings, lengths):
    print("\naccuracy: cases with every expected value in the prediction, % [95 % Wilson interval]"
          " (RULER score, when it differs)")
    for t in tasks:
        rows = {}
        for c in table:
            if c["task"] == t:
                rows.setdefault((c["method"], c["setting"]), {})[c["length"]] = c
        if not rows:
            continue
        print(f"\n{t}")
        print(f"  {'method':7s} {'setting':12s} " + " ".join(f"{L:>22d}" for L in lengths))
        order = lambda k: (methods.index(k[0]) if k[0] in methods else 99,
                           settings.index(k[1]) if k[1] in settings else -1)
        for (m, st), byL in sorted(rows.items(), key=lambda kv: order(kv[0])):
            cellv = []
            for L in lengths:
                c = byL.get(L)
                if not c:
                    cellv.append(f"{'-':>22s}")
                    continue
                s = f"{100 * c['accuracy']:3.0f} [{100 * c['wilson95'][0]:.0f},{100 * c['wilson95'][1]:.0f}]"
                if abs(c["ruler_score"] - c["accuracy"]) > 1e-9:
                    s += f" ({100 * c['ruler_score']:.0f})"
                cellv.append(f"{s:>22s}")
            print(f"  {m:7s} {st:12s} " + " ".join(cellv))


if __name__ == "__main__":
    main()
