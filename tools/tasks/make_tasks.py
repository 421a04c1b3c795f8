"""Writes a task file for `kvfold eval` (format: launch/tasks_file.h).

    python3 tools/tasks/make_tasks.py --tokenizer DIR --out tasks.jsonl \
        [--tasks passkey,niah_multikey,kv,vt,qa] [--lengths 1024,4096,8192] \
        [--per_task 20] [--seed 0]

DIR holds the model's tokenizer.json (lengths are counted with it, prompt
format included: "<bos>DOCUMENT\\n\\nQUESTION\\nAnswer:"). The same seed,
tokenizer and /usr/share/common-licenses give the same file; the header
records the seed, the haystack's sha256 and a probe text with its ids, so
kvfold refuses the file for a model with another tokenizer.
Needs `tokenizers` (tools/tasks/requirements.txt).
"""
import argparse
import json
import os
import random
import sys

from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402

PROBE = ("The pass key is 48213. One of the special magic numbers for amber-otter is: 905112. "
         "VAR QRS = VAR ABC. Alma lives in Oslo.\n\nWhat is the pass key?\nAnswer:")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", required=True, help="directory with tokenizer.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default=",".join(tasks.TASKS))
    ap.add_argument("--lengths", default="1024,4096,8192")
    ap.add_argument("--per_task", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    names = [t for t in args.tasks.split(",") if t]
    for t in names:
        if t not in tasks.TASKS:
            sys.exit(f"error: unknown task {t!r} (known: {', '.join(tasks.TASKS)})")
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x]
    except ValueError:
        sys.exit(f"error: --lengths={args.lengths}: expected comma-separated integers")
    if any(n < 256 or n > 131072 for n in lengths):
        sys.exit("error: lengths must be within [256, 131072] tokens")
    path = os.path.join(args.tokenizer, "tokenizer.json")
    if not os.path.exists(path):
        sys.exit(f"error: {path} not found")
    tok = Tokenizer.from_file(path)

    def count(s):
        return len(tok.encode(s, add_special_tokens=False).ids)

    hay = tasks.Haystack(count)
    overhead = count("\nAnswer:") + 1  # + <bos>
    header = {"kvfold_tasks": 1, "seed": args.seed, "haystack": tasks.LICENSE_DIR,
              "haystack_sha256": hay.sha256, "tasks": names, "lengths": lengths,
              "tokenizer_probe": {"text": PROBE,
                                  "ids": tok.encode(PROBE, add_special_tokens=False).ids}}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(header) + "\n")
        for n in lengths:
            for t in names:
                rng = random.Random(f"{args.seed}-{t}-{n}")
                for i in range(args.per_task):
                    s = tasks.make_sample(t, rng, hay, n, overhead)
                    f.write(json.dumps({"id": f"{t}-{n}-{i}", "task": t, "length": n,
                                        "tokens": s["tokens"], "document": s["document"],
                                        "question": s["question"], "answer": s["answer"]}) + "\n")
            print(f"{n} tokens: {len(names) * args.per_task} samples", file=sys.stderr)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
