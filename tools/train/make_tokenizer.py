"""Trains the built-in model's tokenizer: byte-level BPE (so any text
encodes), digits split one per token (answers are numbers), 1024 ids.

    python3 tools/train/make_tokenizer.py --out DIR [--vocab 1024] [--seed 0]

Training text: the haystack paragraphs (tools/tasks) and 2,000 samples of
each task's planted sentences and questions. Writes DIR/tokenizer.json and
DIR/tokenizer_config.json (with the chat template the model is trained on:
"<|bos|>DOCUMENT\\n\\nQUESTION\\nAnswer:", system messages ignored).
"""
import argparse
import json
import os
import random
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tasks"))
import tasks  # noqa: E402

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
                 "{{ message['content'] }}{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}\nAnswer:{% endif %}")


def corpus(seed):
    paragraphs, _ = tasks.haystack_paragraphs()
    yield from paragraphs
    rng = random.Random(seed)
    for _ in range(2000):
        for task in tasks.TASKS:
            needles, qas = tasks._needles(task, rng, 4096)
            question, answer = qas[0]
            yield " ".join(t for _, t in needles) + "\n\n" + question + "\nAnswer: " + answer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=[BOS, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(args.seed), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)])
    os.makedirs(args.out, exist_ok=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    config = {"add_bos_token": True, "add_eos_token": False, "bos_token": BOS,
              "eos_token": EOS, "pad_token": PAD, "model_max_length": 32768,
              "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHAT_TEMPLATE}
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    print(f"vocab {tok.get_vocab_size()} -> {args.out}")


if __name__ == "__main__":
    main()
