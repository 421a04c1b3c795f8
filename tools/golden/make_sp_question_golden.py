#!/usr/bin/env python3
"""Golden attention of a question over a document, for kvfold's
question-aware sequence-parallel prefill (tests/sp_test.cc,
SpQuestionTest).

With --question_mode=aware and --sp > 1, the question's rows observe every
rank's last prefill chunk: the policy's column sums (the votes that pick the
slots it keeps) are the attention probabilities of the chunk's last queries,
the question's among them, over the rank's cache.  When a document fits in one
chunk nothing has been compressed yet, so every row sees exact keys and the
votes follow from the plain causal attention of [document ; question].

For each checkpoint this script draws a fixed-seed document and question,
runs transformers' eager attention in float32 over [document ; question] with
`output_attentions=True`, and writes, per layer, query head and row of the
concatenation, the probabilities over the document's columns (the row's full
softmax over every key it sees, the question's keys included).  The test
renormalises them over the columns a rank's cache holds and sums them over
the query heads of each KV head.

Usage (tools/requirements.txt; CPU, a few seconds):
    python3 tools/golden/make_sp_question_golden.py --out tests/golden/sp_question
"""

import argparse
import json
import os

import torch
import transformers
from transformers import AutoModelForCausalLM

EXPECTED_TRANSFORMERS = "4.46.3"
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden")
CASES = {"llama3_f32": 8101, "mistral_gqa_f32": 8202}
DOC_LEN, QUESTION_LEN = 40, 8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if transformers.__version__ != EXPECTED_TRANSFORMERS:
        raise SystemExit(f"transformers {EXPECTED_TRANSFORMERS} expected, "
                         f"found {transformers.__version__}")
    os.makedirs(args.out, exist_ok=True)
    for name, seed in CASES.items():
        model = AutoModelForCausalLM.from_pretrained(
            os.path.join(GOLDEN, name), torch_dtype=torch.float32,
            attn_implementation="eager")
        model.eval()
        gen = torch.Generator().manual_seed(seed)
        vocab = model.config.vocab_size
        ids = torch.randint(3, vocab, (DOC_LEN + QUESTION_LEN,), generator=gen)
        with torch.no_grad():
            out = model(ids[None], output_attentions=True)
        # [layers][heads][rows][document columns]
        probs = [a[0, :, :, :DOC_LEN].tolist() for a in out.attentions]
        record = {
            "checkpoint": name,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "document": ids[:DOC_LEN].tolist(),
            "question": ids[DOC_LEN:].tolist(),
            "probs": probs,
        }
        path = os.path.join(args.out, f"{name}.json")
        with open(path, "w") as f:
            json.dump(record, f)
        heads = len(probs[0])
        print(f"{name}: {len(probs)} layers x {heads} heads x {DOC_LEN + QUESTION_LEN} rows "
              f"-> {path}")


if __name__ == "__main__":
    main()
