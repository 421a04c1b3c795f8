#!/usr/bin/env python3
"""Golden ids of chat prompts: a document and questions in a real chat template.

For three families, writes tests/golden/chat_prompts/<name>/ with the fixture
tokenizer (tests/golden/tokenizers/<tokenizer>/tokenizer.json), its
tokenizer_config.json plus the real chat template
(tests/golden/chat_templates/<template>.jinja), and golden.json: for each case,
the ids transformers' apply_chat_template(messages, add_generation_prompt=True,
tokenize=True) gives for every question, where messages are an optional system
message and the user's message "DOCUMENT\\n\\nQUESTION" (what `kvfold generate
--text=... --question=...` sends). kvfold must produce document ids + question
ids equal to these.

Usage: python3 tools/tokenizer/make_chat_prompt_fixtures.py   (transformers 4.46.3)
"""
import json
import os
import shutil
import tempfile

import transformers
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests/golden/chat_prompts")

FAMILIES = [
    ("llama31", "llama3_bytelevel", "meta-llama-Llama-3.1-8B-Instruct", True),
    ("mistral_v03", "mistral_sentencepiece", "mistralai-Mistral-7B-Instruct-v0.3", False),
    ("qwen25", "qwen2_bytelevel", "Qwen-Qwen2.5-7B-Instruct", True),
]

DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Chapter 1\n\nIt was a bright cold day in April, and the clocks were striking thirteen.\n",
    "def area(r):\n    return 3.14159 * r * r   \n\n",
    "Numbers: 1234567 and 3.5%; 東京は日本の首都です。 Émile a dit « bonjour » 🙂",
    "  leading spaces and a trailing tab\t",
    "A document that mentions <|eot_id|> and <s> and <|im_end|> as plain text.",
]

QUESTIONS = [
    ["What is this about?"],
    ["Who is mentioned?", "Summarise it in one line.", "  Spaces around?  "],
]

SYSTEM = "You answer questions about documents briefly."


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    for name, tok, template, with_system in FAMILIES:
        src = os.path.join(ROOT, "tests/golden/tokenizers", tok)
        dst = os.path.join(OUT, name)
        os.makedirs(dst)
        shutil.copy(os.path.join(src, "tokenizer.json"), dst)
        with open(os.path.join(src, "tokenizer_config.json")) as f:
            config = json.load(f)
        with open(os.path.join(ROOT, "tests/golden/chat_templates", template + ".jinja")) as f:
            config["chat_template"] = f.read()
        with open(os.path.join(dst, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
            f.write("\n")
        tokenizer = AutoTokenizer.from_pretrained(dst)
        cases = []
        for document in DOCUMENTS:
            for questions in QUESTIONS:
                for system in ([None, SYSTEM] if with_system else [None]):
                    ids = []
                    for q in questions:
                        messages = [] if system is None else [{"role": "system", "content": system}]
                        messages.append({"role": "user", "content": document + "\n\n" + q})
                        ids.append(tokenizer.apply_chat_template(
                            messages, add_generation_prompt=True, tokenize=True))
                    cases.append({"document": document, "questions": questions,
                                  "system": system or "", "ids": ids})
        with open(os.path.join(dst, "golden.json"), "w") as f:
            json.dump({"generator": "tools/tokenizer/make_chat_prompt_fixtures.py",
                       "transformers_version": transformers.__version__,
                       "tokenizer_class": type(tokenizer).__name__,
                       "template": template, "cases": cases}, f, ensure_ascii=False)
            f.write("\n")
        print(name, type(tokenizer).__name__, len(cases), "cases")


if __name__ == "__main__":
    main()
