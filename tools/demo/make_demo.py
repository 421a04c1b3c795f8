#!/usr/bin/env python3
"""Makes the bundled data of `kvfold demo`: long documents with planted
facts, in the formats the built-in model (tools/model) was trained on, the
facts file and the job file.

Writes, next to this script (or under --out):

  documents/passkey.txt        ~8K tokens   a pass key hidden in the haystack
  documents/variables.txt      ~12K tokens  two chains of variable assignments
  documents/registry.txt       ~16K tokens  a registry of 64 codes in the text
  documents/people.txt         ~24K tokens  where eight people live and work
  documents/magic_numbers.txt  ~30K tokens  four "special magic numbers"
  facts.json                   the expected answer of every question, by job
  jobs.jsonl                   the demo's jobs for `kvfold run` (launch/job.proto)

The haystack is the English text of /usr/share/common-licenses (see
tools/tasks/tasks.py); lengths are counted with the built-in model's
tokenizer. Everything is seeded (SEED), so a rerun on the same machine gives
the same files.

  python3 tools/demo/make_demo.py            # rewrite tools/demo/{documents,facts.json,jobs.jsonl}
  python3 tools/demo/make_demo.py --check    # exit 1 if the committed files differ
Needs `tokenizers` (tools/tasks/requirements.txt).
"""
import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tasks"))
import tasks  # noqa: E402

SEED = 20261122
# name, task, target tokens, questions asked
DOCUMENTS = [("passkey", "passkey", 8192, 1),
             ("variables", "vt", 12288, 2),
             ("registry", "kv", 16384, 3),
             ("people", "qa", 24576, 4),
             ("magic_numbers", "niah_multikey", 30000, 2)]


def outputs():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(HERE, "..", "model", "tokenizer.json"))

    def count(s):
        return len(tok.encode(s, add_special_tokens=False).ids)

    hay = tasks.Haystack(count)
    overhead = count("\nAnswer:") + 1
    files, jobs, facts = {}, [], {}
    for name, task, n, asked in DOCUMENTS:
        s = tasks.make_sample(task, random.Random(f"{SEED}-{name}"), hay, n, overhead)
        qas = [(s["question"], s["answer"])] + list(s["more_questions"])[:asked - 1]
        files[f"documents/{name}.txt"] = s["document"] + "\n"
        jobs.append({"id": name, "document_file": f"documents/{name}.txt",
                     "question": [q for q, _ in qas]})
        facts[name] = {q: a for q, a in qas}
    # The same pass key through StreamingLLM's window: the needle is gone.
    jobs.append({"id": "passkey-streaming", "document_file": "documents/passkey.txt",
                 "question": ["What is the pass key?"], "cache": {"streaming": {}, "slots": 256}})
    facts["passkey-streaming"] = facts["passkey"]
    files["jobs.jsonl"] = "".join(json.dumps(j) + "\n" for j in jobs)
    files["facts.json"] = json.dumps({"seed": SEED, "expected": facts}, indent=2) + "\n"
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    files = outputs()
    if args.check:
        stale = [p for p, text in files.items()
                 if not os.path.exists(os.path.join(args.out, p))
                 or open(os.path.join(args.out, p)).read() != text]
        if stale:
            sys.exit(f"differ from make_demo.py's output: {', '.join(stale)}")
        print("demo files are up to date")
        return
    for p, text in files.items():
        path = os.path.join(args.out, p)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    print(f"wrote {len(files)} files under {args.out}")


if __name__ == "__main__":
    main()
