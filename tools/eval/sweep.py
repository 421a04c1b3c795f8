"""The accuracy-vs-compression sweep: `kvfold eval` over policies x budgets x
lengths on one task file, one JSON result per configuration.

    python3 tools/eval/sweep.py --kvfold bazel-bin/launch/kvfold --model DIR \
        --tasks tasks.jsonl --out results.jsonl [--lengths 4096,8192] \
        [--budgets 64,128,256,512,1024] [--policies full,streaming,h2o,...] \
        [--lococo M=FILE,...] [--matryoshka FILE --feature_budgets 0.5,0.25]
        [--per_group 10] [--threads 2]

Each line of --out is kvfold eval's JSON plus "label", "budget" and
"length". Configurations already in --out are skipped, so an interrupted
sweep resumes. Standard library only.
"""
import argparse
import json
import os
import subprocess
import sys
import time

BUDGETED = ("streaming", "h2o", "snapkv", "pyramidkv", "kvmerger")


def configs(args):
    policies = args.policies.split(",")
    # MatryoshkaKV feature budgets: each alone (full slots) and combined with
    # every slot policy and budget, labelled "POLICY+mkvB".
    features = [(f"+mkv{b}", [f"--compressor={args.matryoshka}", f"--feature_budget={b}"])
                for b in filter(None, args.feature_budgets.split(","))] if args.matryoshka else []
    for length in [int(x) for x in args.lengths.split(",")]:
        if "full" in policies:
            yield length, "full", 0, ["--cache=full"]
            for suffix, flags in features:
                yield length, "full" + suffix, 0, ["--cache=full"] + flags
        for budget in [int(x) for x in args.budgets.split(",")]:
            if budget >= length:
                continue
            for p in policies:
                if p in BUDGETED:
                    yield length, p, budget, [f"--cache={p}", f"--cache_slots={budget}"]
                    for suffix, flags in features:
                        yield (length, p + suffix, budget,
                               [f"--cache={p}", f"--cache_slots={budget}"] + flags)
            for spec in filter(None, args.lococo.split(",")):
                m, path = spec.split("=", 1)
                if int(m) == budget:
                    yield length, "lococo", budget, ["--cache=lococo", f"--compressor={path}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kvfold", default="bazel-bin/launch/kvfold")
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lengths", default="8192")
    ap.add_argument("--budgets", default="64,128,256,512,1024")
    ap.add_argument("--policies", default="full," + ",".join(BUDGETED))
    ap.add_argument("--lococo", default="", help="M=compressor.safetensors,... (one per budget)")
    ap.add_argument("--matryoshka", default="", help="MatryoshkaKV projection file")
    ap.add_argument("--feature_budgets", default="0.5,0.25",
                    help="with --matryoshka: feature budgets stored in the file")
    ap.add_argument("--per_group", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--extra", default="", help="more kvfold flags, space separated")
    args = ap.parse_args()
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done.add((r["length"], r["label"], r["budget"]))
    todo = [c for c in configs(args) if c[:3] not in done]
    print(f"sweep: {len(todo)} configurations to run ({len(done)} already in {args.out})",
          file=sys.stderr)
    for i, (length, label, budget, flags) in enumerate(todo):
        cmd = [args.kvfold, "eval", f"--model={args.model}", f"--tasks={args.tasks}",
               f"--eval_lengths={length}", f"--per_group={args.per_group}",
               f"--threads={args.threads}"] + flags + args.extra.split()
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"sweep: {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
        r = json.loads(p.stdout)
        r.update({"label": label, "budget": budget, "length": length})
        with open(args.out, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"sweep {i + 1}/{len(todo)}: {length} {label} {budget}: accuracy "
              f"{r['accuracy']:.3f} ({time.time() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
