"""Synthetic long-context tasks (RULER family) for kvfold, seeded.

Five tasks, each a document (natural English haystack with planted facts),
one question and the expected answer:

  passkey       one pass key (5 digits) hidden in the haystack
  niah_multikey one of four "special magic numbers" (6 digits), three keys
                are distractors
  kv            a block of many "key: value" pairs; the value of one key
  vt            variable tracking: two chains of assignments
                (VAR A = 12345. VAR B = A. ...); every variable holding a value
  qa            facts about eight people spread through the document
                (city, job); one question about one person

The haystack is the English prose of the license texts every Debian system
ships in /usr/share/common-licenses (base-files), paragraphs reflowed to one
line each, read from a random paragraph onward (wrapping around).

Standard library only; lengths are counted by a callable the caller gives
(the model's tokenizer), so a document of "8192 tokens" is 8192 tokens of
that tokenizer for document + question.
"""
import hashlib
import os
import random
import re

LICENSE_DIR = "/usr/share/common-licenses"
TASKS = ("passkey", "niah_multikey", "kv", "vt", "qa")

ADJECTIVES = ("amber silver quiet rapid hollow golden crimson frozen gentle bitter "
              "distant hidden lunar narrow polished rustic scarlet silent sturdy tidal "
              "velvet wooden bright cobalt dusty eager fragile humble ivory jagged").split()
NOUNS = ("otter falcon harbor lantern meadow quartz river saddle thistle violin "
         "anchor badger canyon cedar comet ember forest glacier hammer island "
         "kettle ladder marble orchard pebble quiver raven summit tunnel walnut").split()
NAMES = ("Alma Bruno Clara Dmitri Elena Farid Greta Hiro Ines Jonas Kira Luca "
         "Marta Nils Olga Pavel Rosa Soren Tomas Vera Wanda Yusuf Zelda Anton "
         "Berit Cyril Dora Emil Frida Gideon").split()
CITIES = ("Oslo Lisbon Porto Vienna Prague Dublin Krakow Bergen Geneva Turin "
          "Seville Ghent Tallinn Riga Malmo Leeds Lyon Bremen Split Bologna").split()
JOBS = ("baker carpenter dentist engineer farmer gardener jeweler lawyer "
        "librarian mechanic nurse painter pilot plumber potter sailor tailor "
        "teacher welder writer").split()
VAR_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


def haystack_paragraphs(directory=LICENSE_DIR):
    """Paragraphs of the license texts, deduplicated, one line each, and a
    sha256 over them (recorded in task files)."""
    if not os.path.isdir(directory):
        raise SystemExit(f"error: {directory} not found (the haystack is the license texts of "
                         "Debian's base-files package)")
    seen, paragraphs = set(), []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for block in re.split(r"\n\s*\n", text):
            line = " ".join(block.split())
            if len(line) < 40 or line in seen:
                continue
            seen.add(line)
            paragraphs.append(line)
    if len(paragraphs) < 100:
        raise SystemExit(f"error: only {len(paragraphs)} paragraphs of text in {directory}")
    digest = hashlib.sha256("\n".join(paragraphs).encode()).hexdigest()
    return paragraphs, digest


def _digits(rng, n):
    return str(rng.randint(10 ** (n - 1), 10 ** n - 1))


def _var_name(rng, used):
    while True:
        name = "".join(rng.choice(VAR_LETTERS) for _ in range(3))
        if name not in used:
            used.add(name)
            return name


def _needles(task, rng, target_tokens):
    """(needles, questions): needles are (depth in [0, 1], text); questions
    are (question, answer) pairs the document answers, the sampled one
    first."""
    if task == "passkey":
        key = _digits(rng, 5)
        return ([(rng.random(), f"The pass key is {key}. Remember it. {key} is the pass key.")],
                [("What is the pass key?", key)])
    if task == "niah_multikey":
        keys = set()
        while len(keys) < 4:
            keys.add(f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}")
        keys = sorted(keys)
        rng.shuffle(keys)
        values = [_digits(rng, 6) for _ in keys]
        needles = [(rng.random(), f"One of the special magic numbers for {k} is: {v}.")
                   for k, v in zip(keys, values)]
        return needles, [(f"What is the special magic number for {k}?", v)
                         for k, v in zip(keys, values)]
    if task == "kv":
        pairs = max(8, min(64, target_tokens // 256))
        keys = set()
        while len(keys) < pairs:
            keys.add(f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}")
        keys = sorted(keys)
        rng.shuffle(keys)
        values = [_digits(rng, 5) for _ in keys]
        block = "Registry of codes: " + " ".join(f"{k}: {v}." for k, v in zip(keys, values))
        pick = rng.randrange(pairs)
        order = [pick] + [i for i in range(pairs) if i != pick]
        return [(rng.random(), block)], [(f"What is the code of {keys[i]}?", values[i])
                                         for i in order]
    if task == "vt":
        used = set()
        chains = []
        for _ in range(2):
            value = _digits(rng, 5)
            names = [_var_name(rng, used) for _ in range(4)]
            stmts = [f"VAR {names[0]} = {value}."]
            stmts += [f"VAR {names[i]} = {names[i - 1]}." for i in range(1, 4)]
            chains.append((value, names, stmts))
        depths = sorted(rng.random() for _ in range(8))
        # Interleave the two chains; each chain keeps its order.
        order = [0] * 4 + [1] * 4
        rng.shuffle(order)
        counters = [0, 0]
        needles = []
        for depth, c in zip(depths, order):
            needles.append((depth, chains[c][2][counters[c]]))
            counters[c] += 1
        return needles, [(f"Which variables are assigned the value {value}?", " ".join(names))
                         for value, names, _ in chains]
    if task == "qa":
        people = rng.sample(NAMES, 8)
        facts, cities, jobs = [], {}, {}
        for p in people:
            cities[p] = rng.choice(CITIES)
            jobs[p] = rng.choice(JOBS)
            facts.append((rng.random(), f"{p} lives in {cities[p]}."))
            facts.append((rng.random(), f"{p} works as a {jobs[p]}."))
        who = rng.choice(people)
        qas = []
        for p in [who] + [p for p in people if p != who]:
            qas.append((f"Where does {p} live?", cities[p]))
            qas.append((f"What does {p} work as?", jobs[p]))
        if rng.random() < 0.5:
            return facts, qas
        return facts, [qas[1], qas[0]] + qas[2:]
    raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")


class Haystack:
    """Paragraphs with their token counts under `count` (one call each)."""

    def __init__(self, count, directory=LICENSE_DIR):
        self.paragraphs, self.sha256 = haystack_paragraphs(directory)
        self.count = count
        self.tokens = [count(p + "\n") for p in self.paragraphs]

    def take(self, rng, budget):
        """Consecutive paragraphs from a random one on, wrapping, up to `budget`
        tokens (the last one cut by words to fit)."""
        out, used = [], 0
        i = rng.randrange(len(self.paragraphs))
        while used < budget:
            p, n = self.paragraphs[i], self.tokens[i]
            if used + n > budget:
                words = p.split()
                keep = max(1, int(len(words) * (budget - used) / n))
                p = " ".join(words[:keep])
                n = self.count(p + "\n")
                if used + n > budget:
                    break
            out.append(p)
            used += n
            i = (i + 1) % len(self.paragraphs)
        return out


def make_sample(task, rng, hay, target_tokens, question_overhead=0):
    """One sample whose document + question (+ `question_overhead` tokens of
    prompt format) is at most `target_tokens` tokens and close to it."""
    needles, qas = _needles(task, rng, target_tokens)
    question, answer = qas[0]
    needle_tokens = sum(hay.count(t + "\n") for _, t in needles)
    fixed = needle_tokens + hay.count("\n\n" + question) + question_overhead + 2
    budget = target_tokens - fixed
    if budget < 16:
        raise ValueError(f"{task}: {target_tokens} tokens leave no room for a haystack")
    for _ in range(4):
        paragraphs = hay.take(rng, budget)
        slots = sorted(needles, key=lambda x: x[0])
        lines, j = [], 0
        for k, p in enumerate(paragraphs):
            while j < len(slots) and slots[j][0] * len(paragraphs) <= k:
                lines.append(slots[j][1])
                j += 1
            lines.append(p)
        lines.extend(t for _, t in slots[j:])
        document = "\n".join(lines)
        total = hay.count(document + "\n\n" + question) + question_overhead
        if total <= target_tokens:
            return {"document": document, "question": question, "answer": answer,
                    "tokens": total, "more_questions": qas[1:]}
        budget -= total - target_tokens + 8
    raise ValueError(f"{task}: could not fit {target_tokens} tokens")
