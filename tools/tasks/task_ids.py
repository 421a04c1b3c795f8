"""A task file as token-id sequences (calibration data for
tools/calibrate/calibrate.py --data): one line per sample, the prompt in the
model's chat template followed by the answer and eos, as the model was
trained.

    python3 tools/tasks/task_ids.py --model DIR --tasks tasks.jsonl --out ids.txt

`samples` and `prompt_ids` are also what tools/train/make_eval_golden.py
prompts transformers with.
"""
import argparse
import json


def samples(path):
    """The samples of a task file (the header line skipped)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()][1:]


def prompt_ids(tok, sample):
    """The sample's prompt ids as kvfold builds them: the user message
    "DOCUMENT\\n\\nQUESTION" through the chat template, generation prompt on."""
    return tok.apply_chat_template(
        [{"role": "user", "content": sample["document"] + "\n\n" + sample["question"]}],
        add_generation_prompt=True, tokenize=True)


def main():
    from transformers import AutoTokenizer
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.model)
    with open(args.out, "w") as out:
        for s in samples(args.tasks):
            ids = prompt_ids(tok, s)
            ids += tok.encode(" " + s["answer"], add_special_tokens=False) + [tok.eos_token_id]
            out.write(" ".join(map(str, ids)) + "\n")


if __name__ == "__main__":
    main()
