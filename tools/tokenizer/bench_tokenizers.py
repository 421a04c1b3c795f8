#!/usr/bin/env python3
"""Tokenizer encode throughput: Hugging Face `tokenizers` vs kvfold, same run.

Builds a deterministic benchmark text of each requested size by concatenating
the fixed on-disk documents the fixtures are trained on (make_tokenizer_fixtures.
corpus_documents(): licenses, Python stdlib code and prose, libstdc++ headers,
then translations in 11 languages; repeated as needed, cut at a character
boundary), writes it to WORKDIR/bench_<size>MB.txt, and for each tokenizer:

  * tokenizers: Tokenizer.from_file(DIR/tokenizer.json).encode(text) on the
    whole text in one call, single-threaded (RAYON_NUM_THREADS=1,
    TOKENIZERS_PARALLELISM=false, set before tokenizers is imported), median
    of --repeats runs after one warm-up run;
  * kvfold (with --kvfold=BINARY): `BINARY bench_tokenizer --tokenizer=DIR
    --text_file=FILE --repeats=N --ids_out=IDS` which prints one JSON line with
    at least {"mb_per_s", "tokens", "seconds_median"} and writes the ids one
    per line to IDS.

The token counts (and with kvfold the ids) are compared: tokenizers' ids with
add_special_tokens=True are the reference; a kvfold run that matches the
add_special_tokens=False ids instead is reported as such ("match":
"without_special_tokens"). MB here is 1e6 bytes of UTF-8 text.

Prints one JSON object per (tokenizer, size) line:
  {"tokenizer", "size_mb", "bytes", "tokens", "hf_mb_per_s", "hf_seconds_median",
   "kvfold_mb_per_s", "kvfold_seconds_median", "kvfold_tokens", "ratio", "match"}
ratio = kvfold MB/s / tokenizers MB/s. Exit status 1 on any mismatch.

Examples:
  python3 tools/tokenizer/bench_tokenizers.py                       # all fixtures, 10 MB
  python3 tools/tokenizer/bench_tokenizers.py --sizes=1,10,100 \\
      --kvfold=bazel-bin/launch/kvfold --tokenizer=tests/golden/tokenizers/llama3_bytelevel
"""
from __future__ import annotations

import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_fixtures as fixtures  # noqa: E402
import tokenizers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def build_text(size_bytes: int) -> str:
    docs = [t for _, t in fixtures.corpus_documents()]
    parts, n = [], 0
    while n < size_bytes:
        for t in docs:
            parts.append(t)
            n += len(t.encode("utf-8"))
            if n >= size_bytes:
                break
    data = "".join(parts).encode("utf-8")[:size_bytes]
    return data.decode("utf-8", errors="ignore")  # drop a cut trailing character


def write_text(workdir: str, size_mb: float) -> tuple[str, str]:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"bench_{size_mb:g}MB.txt")
    text = build_text(int(size_mb * 1_000_000))
    data = text.encode("utf-8")
    if not (os.path.exists(path) and os.path.getsize(path) == len(data) and open(path, "rb").read() == data):
        with open(path, "wb") as f:
            f.write(data)
    return path, text


def time_hf(tok: Tokenizer, text: str, repeats: int):
    enc = tok.encode(text)  # warm-up (and the reference ids)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tok.encode(text)
        times.append(time.perf_counter() - t0)
    return enc.ids, statistics.median(times)


def run_kvfold(binary, tok_dir, text_file, repeats, ids_out):
    cmd = [binary, "bench_tokenizer", f"--tokenizer={tok_dir}", f"--text_file={text_file}",
           f"--repeats={repeats}", f"--ids_out={ids_out}"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> rc {p.returncode}: {p.stderr.strip()[-2000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1]
    res = json.loads(line)
    ids = None
    if os.path.exists(ids_out):
        with open(ids_out) as f:
            ids = [int(x) for x in f.read().split()]
    return res, ids


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10", help="comma-separated sizes in MB (e.g. 1,10,100)")
    ap.add_argument("--tokenizer", action="append", default=None,
                    help="tokenizer directory (repeatable); default: every fixture in tests/golden/tokenizers")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kvfold", default=None, help="path to the kvfold binary")
    ap.add_argument("--workdir", default="/tmp/kvfold_tokenizer_bench")
    args = ap.parse_args()

    tok_dirs = args.tokenizer or [os.path.join(fixtures.DEFAULT_OUT, n) for n in fixtures.BUILDERS]
    failed = False
    for size_mb in [float(s) for s in args.sizes.split(",") if s]:
        text_file, text = write_text(args.workdir, size_mb)
        nbytes = len(text.encode("utf-8"))
        for d in tok_dirs:
            tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            ids, sec = time_hf(tok, text, args.repeats)
            row = {"tokenizer": os.path.basename(os.path.normpath(d)), "size_mb": size_mb, "bytes": nbytes,
                   "tokens": len(ids), "hf_version": tokenizers.__version__,
                   "hf_mb_per_s": round(nbytes / 1e6 / sec, 3), "hf_seconds_median": round(sec, 4)}
            if args.kvfold:
                ids_out = os.path.join(args.workdir, f"ids_{row['tokenizer']}_{size_mb:g}MB.txt")
                if os.path.exists(ids_out):
                    os.remove(ids_out)
                try:
                    res, kv_ids = run_kvfold(args.kvfold, d, text_file, args.repeats, ids_out)
                except Exception as e:  # noqa: BLE001
                    row["error"] = str(e)
                    failed = True
                    print(json.dumps(row, ensure_ascii=False), flush=True)
                    continue
                kv_sec = float(res["seconds_median"])
                row.update({"kvfold_mb_per_s": round(nbytes / 1e6 / kv_sec, 3),
                            "kvfold_reported_mb_per_s": res.get("mb_per_s"),
                            "kvfold_seconds_median": kv_sec, "kvfold_tokens": res.get("tokens")})
                row["ratio"] = round(row["kvfold_mb_per_s"] / row["hf_mb_per_s"], 3)
                plain = None
                if kv_ids is not None:
                    if kv_ids == ids:
                        row["match"] = "ids"
                    else:
                        plain = tok.encode(text, add_special_tokens=False).ids
                        row["match"] = "without_special_tokens" if kv_ids == plain else "IDS_DIFFER"
                        if kv_ids != plain:
                            ref = ids if abs(len(ids) - len(kv_ids)) <= abs(len(plain) - len(kv_ids)) else plain
                            first = next((i for i, (a, b) in enumerate(zip(ref, kv_ids)) if a != b),
                                         min(len(ref), len(kv_ids)))
                            row["first_diff_index"] = first
                else:
                    plain = tok.encode(text, add_special_tokens=False).ids
                    row["match"] = ("tokens" if res.get("tokens") == len(ids) else
                                    "tokens_without_special" if res.get("tokens") == len(plain) else
                                    "TOKEN_COUNT_DIFFERS")
                failed |= row["match"] in ("IDS_DIFFER", "TOKEN_COUNT_DIFFERS")
            print(json.dumps(row, ensure_ascii=False), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
