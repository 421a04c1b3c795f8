"""Golden predictions for tests/eval_test.sh: transformers' greedy answers
of the built-in model on a small task file, the reference `kvfold eval`
must reproduce.

    python3 tools/train/make_eval_golden.py --model tools/model --tasks TASKS \
        --out tests/golden/eval/golden.jsonl

Each sample's prompt is the model's chat template applied by transformers
(the user message "DOCUMENT\\n\\nQUESTION", generation prompt on, as kvfold
builds it); generation is greedy, stopping at eos or after the answer's
token count + 4 tokens (kvfold eval's limit). One line per sample: id,
prompt_tokens, prediction (decoded without special tokens, trimmed),
correct.
"""
import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tasks"))
from task_ids import prompt_ids, samples  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    out = []
    for s in samples(args.tasks):
        ids = prompt_ids(tok, s)
        limit = len(tok.encode(" " + s["answer"], add_special_tokens=False)) + 4
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=limit, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        new = gen[0, len(ids):].tolist()
        stopped = bool(new) and new[-1] == tok.eos_token_id
        text = tok.decode(new[:-1] if stopped else new, skip_special_tokens=True).strip()
        out.append({"id": s["id"], "prompt_tokens": len(ids), "prediction": text,
                    "correct": stopped and text == s["answer"]})
        print(s["id"], out[-1]["correct"], repr(text), flush=True)
    with open(args.out, "w") as f:
        for o in out:
            f.write(json.dumps(o) + "\n")


if __name__ == "__main__":
    main()
