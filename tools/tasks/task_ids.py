"""A task file as token-id sequences (calibration data for
tools/calibrate/calibrate.py --data): one line per sample, the prompt in the
model's chat template followed by the answer and eos, as the model was
trained.

    python3 tools/tasks/task_ids.py --model DIR --tasks tasks.jsonl --out ids.txt
"""
import argparse
import json

from transformers import AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.model)
    with open(args.tasks) as f, open(args.out, "w") as out:
        for n, line in enumerate(f):
            if n == 0 or not line.strip():
                continue
            s = json.loads(line)
            ids = tok.apply_chat_template(
                [{"role": "user", "content": s["document"] + "\n\n" + s["question"]}],
                add_generation_prompt=True, tokenize=True)
            ids += tok.encode(" " + s["answer"], add_special_tokens=False) + [tok.eos_token_id]
            out.write(" ".join(map(str, ids)) + "\n")


if __name__ == "__main__":
    main()
