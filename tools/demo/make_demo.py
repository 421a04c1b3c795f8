#!/usr/bin/env python3
"""Makes the bundled data of `kvfold demo`: long synthetic documents with
planted facts, the facts file and the job file.

Writes, next to this script (or under --out):

  documents/keepers_log.txt        ~20K characters   a lighthouse keeper's log
  documents/council_minutes.txt    ~80K characters   a town council's minutes
  documents/lab_notebook.txt       ~200K characters  a microbiology lab notebook
  documents/library_catalogue.txt  ~350K characters  a subscription library's catalogue
  documents/ships_log.txt          ~600K characters  a sailing ship's log
  facts.json                       every planted fact: question, expected answer,
                                   the sentence holding it and its depth in characters
  jobs.jsonl                       the demo's jobs for `kvfold run` (launch/job.proto)

The documents are made from templates and word lists with Python's `random`
seeded from SEED and the document's name, so the output is byte-identical on
every run (no dependency beyond the standard library; checked across
PYTHONHASHSEEDs). Each document holds a few facts ("needles") planted at known
depths; a fact's subject appears nowhere else in its document, so each question
has one definite answer. The generator checks this, and that every character
is one the demo tokenizer knows (below), before writing anything.

Character set. The demo model is the tiny test checkpoint tests/golden/llama3_f32
with the 256-piece tokenizer tests/golden/tokenizers/tiny256_sentencepiece,
whose vocabulary lacks the digits 4 to 9, the capitals J, Q, Y and Z, the
newline, and "?", "!", "$", "&" (a missing character becomes <unk>). So the
documents spell numbers out in words ("one hundred and twelve"), use the digits
0 to 3 only inside codes and call numbers ("KB-213", "RB-3021"), and use no
word starting with a missing capital. Newlines are kept (one entry or
paragraph per line, a blank line between entries; each run of newlines is one
<unk> token) so the files stay readable. Questions in jobs.jsonl end with "?"
as questions do.

Rerun (from the repository root):

  python3 tools/demo/make_demo.py            # rewrite tools/demo/{documents,facts.json,jobs.jsonl}
  python3 tools/demo/make_demo.py --check    # exit 1 if the committed files differ from the output
  python3 tools/demo/make_demo.py --out /tmp/demo --scale 0.1   # smaller documents elsewhere

Changing a word list, a template, SEED or a size changes the documents; rerun
and commit all the outputs together.
"""

import argparse
import json
import os
import random
import sys

SEED = 20241122
HERE = os.path.dirname(os.path.abspath(__file__))

# Characters of tests/golden/tokenizers/tiny256_sentencepiece's vocabulary that
# the documents may use, plus the newline (see the docstring).
ALLOWED = set(
    "abcdefghijklmnopqrstuvwxyz"
    "ABCDEFGHIKLMNOPRSTUVWX"
    "0123"
    " \n"
    ",.;:'\"()-/%+=#@[]<>*_"
)
# And in questions (for a later model whose tokenizer has it).
ALLOWED_IN_QUESTIONS = ALLOWED - {"\n"} | {"?"}

# --------------------------------------------------------------------------
# Numbers in words.
# --------------------------------------------------------------------------

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORD = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
        "nine": "ninth", "twelve": "twelfth"}


def words(n):
    """English words of 0 <= n < 1,000,000: 112 -> 'one hundred and twelve'."""
    assert 0 <= n < 1000000, n
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + (" and " + words(rest) if rest else "")
    rest = n % 1000
    head = words(n // 1000) + " thousand"
    if not rest:
        return head
    return head + (" and " if rest < 100 else " ") + words(rest)


def ordinal(n):
    """112 -> 'one hundred and twelfth'."""
    w = words(n)
    cut = max(w.rfind(" "), w.rfind("-")) + 1
    last = w[cut:]
    if last in _ORD:
        last = _ORD[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return w[:cut] + last


def plural(n, unit):
    """plural(1, 'minute') -> 'one minute'; plural(7, 'minute') -> 'seven minutes'."""
    return "%s %s%s" % (words(n), unit, "" if n == 1 else "s")


def article(word):
    """'Account' -> 'An Account'; 'Survey' -> 'A Survey'."""
    return ("An " if word[0] in "AEIOU" else "A ") + word


def cap(s):
    return s[:1].upper() + s[1:]


def year_words(y):
    """1847 -> 'eighteen forty-seven'; 1905 -> 'nineteen hundred and five'."""
    hi, lo = divmod(y, 100)
    if lo == 0:
        return words(hi) + " hundred"
    if lo < 10:
        return words(hi) + " hundred and " + words(lo)
    return words(hi) + " " + words(lo)


def code(rng, n):
    """A code of n digits drawn from 0 to 3 (the digits the tokenizer has)."""
    return "".join(rng.choice("0123") for _ in range(n))


# --------------------------------------------------------------------------
# Shared word lists.
# --------------------------------------------------------------------------

FIRST_NAMES = [
    "Abel", "Ada", "Agnes", "Alban", "Alice", "Ambrose", "Anna", "Arthur", "Barnaby", "Beatrice",
    "Bertram", "Bridget", "Cecil", "Clara", "Conrad", "Cora", "Cuthbert", "Dora", "Edgar", "Edith",
    "Edmund", "Eleanor", "Elias", "Elsie", "Ernest", "Esther", "Felix", "Flora", "Frances", "Gideon",
    "Grace", "Hannah", "Harold", "Hazel", "Hector", "Helena", "Hugh", "Ida", "Isaac", "Ivor",
    "Leonard", "Lettice", "Lionel", "Lydia", "Mabel", "Malcolm", "Margery", "Martha", "Matthias",
    "Maud", "Miriam", "Nathaniel", "Nell", "Ned", "Oliver", "Oswin", "Percy", "Phoebe", "Rhoda",
    "Rowan", "Rufus", "Sabine", "Samuel", "Selina", "Septimus", "Sidney", "Susannah", "Thea",
    "Theodore", "Una", "Ursula", "Victor", "Vera", "Walter", "Wilfred", "Winifred",
]
SURNAMES = [
    "Abbott", "Ainsley", "Barlow", "Birch", "Blackwood", "Bramley", "Carver", "Chisholm", "Colby",
    "Crane", "Dawlish", "Denholm", "Drury", "Eastwood", "Ellery", "Farrow", "Fielding", "Fletcher",
    "Garside", "Gilchrist", "Hadley", "Halloran", "Harker", "Hollis", "Ingram", "Keld", "Kettering",
    "Lacey", "Langdon", "Loveday", "Maddox", "Marlow", "Merrick", "Nettleship", "Norcross", "Oldham",
    "Onslow", "Padgett", "Pelham", "Prothero", "Radley", "Redfern", "Rowntree", "Sallow", "Sedgwick",
    "Shillito", "Stainer", "Tapping", "Thwaite", "Tolley", "Underhill", "Varley", "Wadsworth",
    "Warrender", "Whitlock", "Wickham", "Winstanley",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
COMPASS = ["north", "north-east", "east", "south-east", "south", "south-west", "west", "north-west"]
COMPASS_FINE = COMPASS + ["north by east", "east-north-east", "east-south-east", "south by west",
                          "west-south-west", "west-north-west", "north-north-west", "south-south-east"]


def person(rng):
    return rng.choice(FIRST_NAMES) + " " + rng.choice(SURNAMES)


def fill(rng, template, **lists):
    """Fills {name} slots of a template, each from lists[name] (a list: a
    random choice; a callable: called with rng)."""
    out = {}
    for k, v in lists.items():
        if "{" + k + "}" in template:
            out[k] = v(rng) if callable(v) else rng.choice(v)
    return template.format(**out)


def fill_some(rng, k, templates, **lists):
    """k different templates, filled."""
    return [fill(rng, t, **lists) for t in rng.sample(templates, k)]


# --------------------------------------------------------------------------
# Documents. Each is a header and a list of entries; an entry is a list of
# lines, and its "narrative" line (an index) is a list of sentences until it is
# rendered, so that a needle sentence can be woven into it.
# --------------------------------------------------------------------------


class Doc:
    name = ""
    target_chars = 0
    needles = []  # dicts: id, depth (fraction), kind ("sentence" | "entry"), text, question, answer, keys

    def __init__(self, rng):
        self.rng = rng

    def header(self):
        raise NotImplementedError

    def entry(self, i):
        """Entry i: {"lines": [str | list of sentences], "narrative": index}."""
        raise NotImplementedError


def render_entry(e):
    return "\n".join(" ".join(x) if isinstance(x, list) else x for x in e["lines"])


def build(doc_cls, scale, seed=SEED):
    """Generates a document of doc_cls, plants its needles and returns (text, facts)."""
    rng = random.Random("%d:%s" % (seed, doc_cls.name))
    doc = doc_cls(rng)
    header = doc.header()
    target = int(doc_cls.target_chars * scale)
    entries, total = [], len(header) + 2
    while total < target:
        e = doc.entry(len(entries))
        entries.append(e)
        total += len(render_entry(e)) + 2
    # Plant: a needle goes into (or before) the entry where its depth falls.
    place_rng = random.Random("%d:%s:needles" % (seed, doc_cls.name))
    starts, pos = [], len(header) + 2
    for e in entries:
        starts.append(pos)
        pos += len(render_entry(e)) + 2
    inserts = []
    for n in doc_cls.needles:
        want = n["depth"] * pos
        i = max(k for k in range(len(entries)) if starts[k] <= want or k == 0)
        if n["kind"] == "sentence":
            sent = entries[i]["lines"][entries[i]["narrative"]]
            sent.insert(place_rng.randint(1, len(sent)), n["text"])
        else:
            inserts.append((i, n["text"]))
    for i, text in sorted(inserts, reverse=True):
        entries.insert(i, {"lines": [text], "narrative": 0})
    text = header + "\n\n" + "\n\n".join(render_entry(e) for e in entries) + "\n"

    bad = sorted(set(text) - ALLOWED)
    if bad:
        raise SystemExit("%s: characters outside the tokenizer's vocabulary: %r (near %r)" % (
            doc_cls.name, bad, text[max(0, text.find(bad[0]) - 60):text.find(bad[0]) + 20]))
    facts = []
    for n in doc_cls.needles:
        if text.count(n["text"]) != 1:
            raise SystemExit("%s: needle %s appears %d times" % (doc_cls.name, n["id"], text.count(n["text"])))
        at = text.find(n["text"])
        for key in n["keys"] + [n["answer"]] * n.get("answer_unique", True):
            if text.count(key) != 1:
                raise SystemExit("%s: %r (of %s) appears %d times; it must appear once" % (
                    doc_cls.name, key, n["id"], text.count(key)))
        ans = text.find(n["answer"], at)
        assert at <= ans < at + len(n["text"]), n["id"]
        bad = sorted(set(n["question"]) - ALLOWED_IN_QUESTIONS)
        if bad:
            raise SystemExit("%s: question %s has %r" % (doc_cls.name, n["id"], bad))
        facts.append({
            "id": n["id"],
            "question": n["question"],
            "answer": n["answer"],
            "needle": n["text"],
            "depth_chars": at,
            "depth": round(at / len(text), 4),
            "answer_chars": ans,
        })
    return text, facts


# --- Lighthouse keeper's log ------------------------------------------------

class KeepersLog(Doc):
    name = "keepers_log"
    target_chars = 20000
    needles = [
        dict(id="keepers_log/relief_keeper", depth=0.3, kind="sentence",
             text="The relief keeper, Tomas Elderkin, came ashore from the supply boat Marigold at the morning slack water and took over the night watches.",
             question="What was the name of the relief keeper who came ashore from the supply boat?",
             answer="Tomas Elderkin", keys=["relief keeper"]),
        dict(id="keepers_log/fog_signal", depth=0.55, kind="sentence",
             text="The fog signal was silent for three hours in the night because a gull's nest had blocked the mouth of the trumpet; it was cleared at first light.",
             question="Why was the fog signal silent for three hours?",
             answer="a gull's nest had blocked the mouth of the trumpet", keys=["fog signal"]),
        dict(id="keepers_log/wreck", depth=0.8, kind="sentence",
             text="At dusk the coal brig Persephone struck the Carrick Ledge; her crew of eleven were taken off by the Ballinure lifeboat and all were saved.",
             question="Which ship struck the Carrick Ledge?",
             answer="Persephone", keys=["Carrick Ledge"]),
    ]

    def header(self):
        return ("Log of the Harrow Ness Light\n"
                "Kept by the principal keeper, Agnes Callow, with the assistant keeper, "
                "Walter Pennock. One entry for each day of the autumn season: the hours the lamp "
                "burned, the oil it used, the weather and the ships that passed.")

    def entry(self, i):
        r = self.rng
        lit_h, out_h = r.randint(4, 7), r.randint(5, 8)
        head = "%s, day %s of the season." % (WEEKDAYS[i % 7], words(i + 1))
        watch = ("Lamp lit at %s minutes past %s in the evening and put out at %s in the morning. "
                 "Oil used: %s pints. Wicks trimmed %s times." % (
                     words(r.choice([5, 10, 15, 20, 25, 30, 40, 45, 50])), words(lit_h),
                     r.choice(["%s o'clock", "half past %s", "a quarter past %s"]) % words(out_h),
                     words(r.randint(6, 14)), words(r.randint(2, 5))))
        weather = "Wind %s, %s. %s" % (r.choice(COMPASS), r.choice(
            ["light airs", "a gentle breeze", "a fresh breeze", "a strong breeze", "a near gale",
             "a full gale", "calm"]), r.choice(
            ["Visibility good.", "Visibility poor in drizzle.", "Haze over the water all day.",
             "Clear and cold.", "Heavy sea running against the rocks.", "Low cloud, some rain.",
             "Bright moon, visibility excellent.", "Showers of hail in the afternoon."]))
        events = []
        events += fill_some(r, r.randint(2, 4), [
                "Passed: {ship} bound {dir}, showing her lights correctly.",
                "The {ship} went by to the {dir} at about {hour} o'clock.",
                "Painted the {part}.",
                "Cleaned the lens and polished the brass of the {part}.",
                "{keeper} carried up {n} cans of oil from the store.",
                "{keeper} mended the {thing}.",
                "Saw {birds} on the rocks below the tower.",
                "Wrote to the Board about the {thing}, which is worn.",
                "The clockwork of the lens was wound every two hours through the night.",
                "Seals hauled out on the north skerry.",
                "Fished from the landing at low water and took {n} pollack.",
                "The garden wall needs pointing where the spray has reached it.",
            ], ship=lambda r: "%s %s" % (r.choice(["schooner", "steamer", "ketch", "collier",
                                                     "packet", "trawler", "barque"]),
                                          r.choice(["Alma", "Bellona", "Curlew", "Dove", "Eider",
                                                    "Fortune", "Gannet", "Hope", "Ivanhoe",
                                                    "Kestrel", "Lark", "Minerva", "Osprey",
                                                    "Plover", "Rover", "Swift", "Tern", "Unity",
                                                    "Vesta", "Widgeon"])),
                dir=COMPASS, hour=lambda r: words(r.randint(1, 12)),
                part=["lantern gallery", "railings", "oil store door", "dwelling windows",
                      "weather vane", "lamp pedestal"],
                keeper=["Agnes Callow", "Walter Pennock", "The assistant", "The principal keeper"],
                n=lambda r: words(r.randint(2, 9)),
                thing=["rain gutter", "kitchen range", "storm shutter", "landing ladder",
                       "telescope stand", "boat davit", "cistern lid"],
                birds=["a flock of oystercatchers", "two cormorants", "a heron", "many gulls",
                       "a pair of ravens", "shags drying their wings"])
        return {"lines": [head, [watch, weather] + events], "narrative": 1}


# --- Town council minutes ---------------------------------------------------

COUNCILLORS = ["Abbott", "Birch", "Crane", "Drury", "Ellery", "Fielding", "Garside", "Hollis",
               "Ingram", "Lacey", "Merrick", "Norcross", "Pelham", "Radley", "Sedgwick", "Tolley"]
TOPICS = [
    ("repairs to the footbridge over the river Brack",
     ["the handrail is loose at the town end", "the planks are rotten in three places",
      "a child caught a foot between the boards last week"],
     ["the Surveyor obtain three estimates for the work", "the bridge be closed until repaired",
      "the work be given to Mr. Hadley, carpenter"]),
    ("the fees for stalls at the Saturday market",
     ["traders from outside the town pay the same as residents",
      "the fees have not changed in eleven years", "several stalls stand empty"],
     ["the fee be raised by one penny a stall", "residents pay half the fee",
      "the matter be left until the spring"]),
    ("the street lamps of the High Street",
     ["four lamps have been out since the storm", "the lamplighter asks for a ladder",
      "shopkeepers complain of the dark in the evenings"],
     ["two new lamps be bought", "the lamplighter's wage be raised",
      "the lamps be lit an hour earlier in winter"]),
    ("the drainage of Mill Lane",
     ["water stands in the lane after every heavy rain", "the culvert is choked with silt",
      "the cellars of three houses flooded"],
     ["the culvert be cleared at the town's expense", "the owners of the houses be consulted",
      "the Surveyor report on the cost of a new drain"]),
    ("goats straying on the common",
     ["goats have eaten the rector's hedge", "the pound keeper is unable to catch them",
      "their owners cannot be found"],
     ["owners be fined sixpence for each goat taken to the pound", "a notice be posted on the church door",
      "the pound keeper be given a boy to help him"]),
    ("the roof of the board school",
     ["rain comes through the roof over the infants' room", "slates were lost in the last gale",
      "the headmistress has written twice"],
     ["the roof be repaired before the winter", "the Surveyor inspect it this week",
      "the cost be met from the repairs fund"]),
    ("the arrangements for the autumn fair",
     ["the fair field is wanted by the cricket club", "the showmen ask for water and lighting",
      "last year's fair left the field badly damaged"],
     ["the fair be held on the old bowling green", "the showmen pay a deposit against damage",
      "the Clerk write to the cricket club"]),
    ("dog licences",
     ["many dogs in the town are unlicensed", "a dog bit the postman in Church Street",
      "the constable asks for guidance"],
     ["the constable make a list of unlicensed dogs", "a notice be printed in the newspaper",
      "no further action be taken"]),
    ("the opening hours of the reading room",
     ["working men cannot use the room in the day", "the caretaker will not stay after nine",
      "the gas for the lamps is costly"],
     ["the room open until ten on two evenings", "a second caretaker be engaged",
      "the hours remain as they are"]),
    ("the town clock",
     ["the clock loses five minutes a day", "the clock winder is ill",
      "the bell does not strike the quarters"],
     ["the clock be cleaned by a clockmaker from Ashby", "the verger wind it until the winder is well",
      "the matter be referred to the church wardens"]),
    ("the cleaning of the horse trough in the square",
     ["the trough is green with weed", "carters have asked for it to be cleaned",
      "the pump handle is broken"],
     ["the trough be scoured monthly", "the pump be mended",
      "the Surveyor see to it"]),
    ("the paving of Tanner's Walk",
     ["the footway is muddy in winter", "an old woman fell there in the dark",
      "the residents offer to pay a share"],
     ["the footway be paved with flags", "the residents' offer be accepted",
      "the work wait until the new year"]),
]
OUTCOMES = ["Carried.", "Carried unanimously.", "Lost.", "Carried, {a} votes to {b}.",
            "Lost, {b} votes to {a}.", "Withdrawn after discussion.", "Deferred to the next meeting."]


def councillors(names):
    return ("Councillor " if len(names) == 1 else "Councillors ") + ", ".join(names)


class CouncilMinutes(Doc):
    name = "council_minutes"
    target_chars = 80000
    needles = [
        dict(id="council_minutes/fire_pump", depth=0.15, kind="sentence",
             text="The Council agreed to buy a new fire pump from the Ashby Foundry for four hundred and twenty pounds, to be paid in two parts.",
             question="How much did the Council agree to pay for the new fire pump?",
             answer="four hundred and twenty pounds", keys=["fire pump"]),
        dict(id="council_minutes/tannery", depth=0.5, kind="sentence",
             text="It was resolved that the old tannery on Cinder Row be turned into a public bath house, with separate days for men and for women.",
             question="What is the old tannery on Cinder Row to be turned into?",
             answer="a public bath house", keys=["Cinder Row"]),
        dict(id="council_minutes/church_bell", depth=0.85, kind="sentence",
             text="Councillor Pelham reported that the stolen church bell had been found hidden in a barn at Hollin Farm, and that it was undamaged.",
             question="Where was the stolen church bell found?",
             answer="in a barn at Hollin Farm", keys=["church bell"]),
    ]

    def header(self):
        return ("Minutes of the Town Council of Lower Brackwater\n"
                "Kept by the Town Clerk, Mr. Silas Penrose. Meetings are held in the Guildhall "
                "on alternate weeks; each record lists those present, the business discussed, "
                "the motions put and the votes taken.")

    def entry(self, i):
        r = self.rng
        season = ["spring", "summer", "autumn", "winter"][(i // 6) % 4]
        year = i // 24 + 3
        present = sorted(r.sample(COUNCILLORS, r.randint(7, 11)))
        absent = [c for c in COUNCILLORS if c not in present]
        lines = [
            "Meeting %s. Held in the Guildhall on a %s evening in the %s of the %s year of the charter. "
            "The Mayor in the chair." % (words(i + 1), r.choice(WEEKDAYS[:5]), season, ordinal(year)),
            "Present: Councillors %s. Apologies: %s." % (
                ", ".join(present), councillors(r.sample(absent, min(len(absent), r.randint(1, 3))))),
            ["The minutes of the last meeting were read and signed."],
        ]
        narrative = 2
        for k, (topic, points, motions) in enumerate(r.sample(TOPICS, r.randint(3, 5))):
            a = r.randint(5, 9)
            b = r.randint(0, a - 1)
            mover, seconder = r.sample(present, 2)
            lines.append("Item %s. %s. %s that %s. %s that %s. Councillor %s moved that %s; seconded by Councillor %s. %s" % (
                words(k + 1), cap(topic),
                r.choice(["The Clerk reported", "Councillor %s said" % r.choice(present),
                          "A letter was read stating", "The Surveyor reported"]),
                r.choice(points),
                r.choice(["Councillor %s added" % r.choice(present), "It was further noted",
                          "The Mayor observed"]),
                r.choice(points), mover, r.choice(motions), seconder,
                r.choice(OUTCOMES).format(a=words(a), b=words(b))))
        accounts = ("Accounts passed for payment: %s pounds %s shillings, including the Surveyor's "
                    "bill for %s." % (words(r.randint(3, 90)), words(r.randint(1, 19)), r.choice(
                        ["gravel", "lamp oil", "timber", "printing", "the carting of stone", "tools"])))
        lines[2].append(accounts)
        lines.append("The meeting closed at %s." % r.choice(["eight o'clock", "nine o'clock", "ten o'clock",
                                                            "half past nine", "a quarter to ten"]))
        return {"lines": lines, "narrative": narrative}


# --- Laboratory notebook ----------------------------------------------------

MEDIA = ["nutrient agar", "potato dextrose agar", "minimal medium with glucose", "soil extract agar",
         "starch casein agar", "blood agar", "minimal medium with cellulose", "tryptic soy broth"]
SAMPLES = ["the beech wood plot", "the wheat field at Low Farm", "the river bank below the weir",
           "the compost heap behind the greenhouse", "the peat bog on the moor", "the college lawn",
           "the salt marsh at Brenmouth", "the old orchard", "the sheep pasture on the hill"]


class LabNotebook(Doc):
    name = "lab_notebook"
    target_chars = 200000
    needles = [
        dict(id="lab_notebook/freezer_code", depth=0.1, kind="sentence",
             text="Facilities changed the code of the freezer alarm in the cold room to 3120 today; the old code no longer silences it.",
             question="What is the new code of the freezer alarm?",
             answer="3120", keys=["freezer alarm"]),
        dict(id="lab_notebook/copper_strain", depth=0.45, kind="sentence",
             text="Of all the isolates streaked on the copper plates, only strain KB-213 grew, forming small orange colonies after four days.",
             question="Which strain grew on the copper plates?",
             answer="KB-213", keys=["copper plates"]),
        dict(id="lab_notebook/collaborator", depth=0.75, kind="sentence",
             text="Our collaborator at the Aldridge Institute, Dr. Marek Sollis, has agreed to sequence the genomes of the twelve best isolates.",
             question="Who is the collaborator at the Aldridge Institute?",
             answer="Marek Sollis", keys=["Aldridge Institute"]),
    ]

    def __init__(self, rng):
        super().__init__(rng)
        pool = ["KB-%s" % code(rng, 3) for _ in range(400)]
        self.strains = sorted(set(s for s in pool if s[3] != "0" and s != "KB-213"))
        self.staff = ["Ines Carrow", "Paul Tregear", "Lena Moss", "Owen Hartley", "Rosa Figgis"]

    def header(self):
        return ("Laboratory Notebook, Volume Three\n"
                "Dr. Ines Carrow, Soil Microbiology Group, Hartwell College, room B12. "
                "Isolation and screening of soil bacteria that break down cellulose and tolerate metals. "
                "Each entry gives the aim, the method, what was seen, the result and the next steps.")

    def entry(self, i):
        r = self.rng
        strains = r.sample(self.strains, r.randint(2, 4))
        temp = r.choice([22, 25, 28, 30, 37])
        ph = "%s point %s" % (words(r.randint(5, 8)), words(r.randint(0, 9)))
        aim = r.choice([
            "to test whether %s grow at %s degrees" % (" and ".join(strains), words(temp)),
            "to isolate new strains from a sample taken at %s" % r.choice(SAMPLES),
            "to compare growth of %s on %s and on %s" % (", ".join(strains), r.choice(MEDIA), r.choice(MEDIA)),
            "to measure cellulose breakdown by %s" % " and ".join(strains),
            "to repeat the pH series for %s" % strains[0],
            "to check the purity of the stock cultures of %s" % ", ".join(strains),
        ])
        method = ("Method: %s Plates incubated at %s degrees for %s days; medium adjusted to pH %s." % (
            r.choice([
                "Serial dilutions of the soil suspension, ten to the minus two down to ten to the minus six, were spread on %s." % r.choice(MEDIA),
                "Single colonies were picked with a sterile loop and streaked on %s." % r.choice(MEDIA),
                "Overnight cultures were diluted one in a hundred into %s and shaken." % r.choice(MEDIA),
                "Filter paper strips were added to tubes of %s and inoculated in triplicate." % r.choice(MEDIA),
                "Gram stains were made of each culture and examined under oil immersion.",
            ]), words(temp), words(r.randint(2, 7)), ph))
        obs = []
        obs += fill_some(r, r.randint(3, 5), [
                "{s} formed {size} {colour} colonies with {edge} edges.",
                "{s} grew poorly; colonies were {size} and {colour}.",
                "No growth on the control plate, as expected.",
                "One plate of {s} was contaminated with a mould and discarded.",
                "The broth of {s} turned cloudy within {n} hours.",
                "{s} is Gram-{gram}, {shape}.",
                "Filter paper in the tubes of {s} was visibly softened.",
                "Counts on the ten to the minus {dil} plate: {count} colonies.",
                "{who} checked the incubator thermometer; it read {temp} degrees.",
                "The autoclave was out of use in the morning, so plates were poured after lunch.",
                "{who} ran out of {medium} and made up a fresh batch.",
                "{s} smelled faintly of earth, as streptomycetes do.",
            ], s=strains, size=["small", "large", "pinpoint", "medium-sized", "spreading"],
                colour=["white", "cream", "yellow", "pale pink", "grey", "buff", "chalky white"],
                edge=["smooth", "wavy", "lobed", "ragged", "entire"],
                n=lambda r: words(r.randint(6, 48)), gram=["positive", "negative"],
                shape=["short rods", "long rods", "cocci in chains", "branching filaments"],
                dil=lambda r: words(r.randint(2, 6)), count=lambda r: words(r.randint(11, 300)),
                who=self.staff, temp=lambda r: words(temp), medium=MEDIA)
        result = r.choice([
            "Result: %s is worth keeping; glycerol stocks made." % r.choice(strains),
            "Result: no difference between the media.",
            "Result: growth best at %s degrees." % words(temp),
            "Result: inconclusive; to be repeated with fresh plates.",
            "Result: %s new isolates picked for screening." % words(r.randint(2, 15)),
        ])
        nxt = "Next steps: %s" % r.choice([
            "repeat in triplicate.", "send the best strain for identification.",
            "test on cellulose plates.", "order more %s." % r.choice(MEDIA),
            "discuss with the group on %s." % r.choice(WEEKDAYS[:5]), "write up the pH series.",
        ])
        head = "Entry %s, day %s of the project, %s. Aim: %s." % (
            words(i + 1), words(i + 1 + i // 5 * 2), WEEKDAYS[i % 5], aim)
        return {"lines": [head, method, ["Observations:"] + obs, result, nxt], "narrative": 2}


# --- Library catalogue --------------------------------------------------------

SECTIONS = [
    ("NH", "Natural History"), ("HI", "History"), ("TR", "Travel and Exploration"),
    ("PO", "Poetry and Drama"), ("SC", "Science and Mathematics"), ("AR", "Architecture and the Arts"),
    ("RE", "Religion and Philosophy"), ("AG", "Agriculture and Gardening"), ("MA", "Maritime Affairs"),
    ("FI", "Fiction"), ("LA", "Law and Government"), ("ME", "Medicine"),
]
PLACES = ["Ashby", "Brenmouth", "Caldmoor", "Dunhallow", "Elmsford", "Farley Cross", "Greyhaven",
          "Harrowgate", "Ilsley", "Kirkwall", "Lowther", "Marchbank", "Netherby", "Oxley",
          "Penhallow", "Ravenscar", "Saltash", "Thornbury", "Upwell", "Wexcombe", "the Fens",
          "the Western Isles", "the Northern Moors", "the Low Countries", "Italy", "Egypt",
          "the Levant", "Norway", "Portugal", "the Baltic", "the Indies", "Persia"]
TITLE_NOUNS = ["Birds", "Ferns", "Mosses", "Churches", "Bridges", "Rivers", "Harbours", "Abbeys",
               "Wild Flowers", "Insects", "Tides", "Winds", "Mills", "Castles", "Customs",
               "Songs", "Sermons", "Letters", "Voyages", "Antiquities", "Coins", "Fisheries",
               "Orchards", "Roads", "Canals", "Lighthouses", "Stones", "Shells", "Fungi", "Trees"]
ADJECTIVES = ["Natural", "Brief", "Complete", "Short", "New", "Practical", "Illustrated",
              "Popular", "Critical", "Descriptive", "Compendious", "Faithful", "Curious"]
GENRES = ["History", "Account", "Survey", "Guide", "Treatise", "Description", "Diary",
          "Handbook", "Catalogue", "Memoir", "Essay"]
NOTES = [
    "Bound in half calf; spine rubbed.", "Presented by the author.", "Some foxing to the plates.",
    "With a folding map, torn at one fold.", "Second copy in the reserve stock.",
    "Bookplate of the late Canon Ellery.", "Lacks the title page.", "Rebound in cloth.",
    "Many engraved plates, some coloured by hand.", "Not to be lent.", "Pencil notes in the margins.",
    "Water stain to the lower corner.", "Two volumes in one.", "Uncut and unopened.",
    "Bought at the sale of the Marchbank library.", "Index at the end.", "Signed by the engraver.",
]


class LibraryCatalogue(Doc):
    name = "library_catalogue"
    target_chars = 350000
    needles = [
        dict(id="library_catalogue/velmont_author", depth=0.2, kind="entry",
             text="RB-1302  The Secret Gardens of Velmont, in verse.\n"
                  "Author: Cassia Ferrand. Published: Greyhaven, eighteen sixty-three. One hundred and eighty pages.\n"
                  "Shelf: Rare books cabinet, drawer three.\n"
                  "Notes: The author's only book; dedicated to her brother.",
             question="Who wrote The Secret Gardens of Velmont?",
             answer="Cassia Ferrand", keys=["Velmont"]),
        dict(id="library_catalogue/map_room_key", depth=0.55, kind="entry",
             text="RB-2113  A Chart of the Northern Passages, drawn from the voyages of the Greyhaven whalers.\n"
                  "Author: Anonymous. Published: Greyhaven, seventeen ninety-one. One sheet, folded.\n"
                  "Shelf: the locked map room.\n"
                  "Notes: The only known copy. The key of the map room is held by the head librarian, Mrs. Odile Grant, and the chart may be seen only in her presence.",
             question="Who holds the key of the map room?",
             answer="Odile Grant", keys=["key of the map room"]),
        dict(id="library_catalogue/tides_call_number", depth=0.9, kind="entry",
             text="RB-3021  A Treatise on Tides and Moons, with tables for every port of the kingdom.\n"
                  "Author: Elias Thwaite. Published: Saltash, seventeen seventy-four. Three hundred and two pages.\n"
                  "Shelf: Rare books cabinet, drawer one.\n"
                  "Notes: Bought at the sale of the Saltash harbour office; the tables are corrected in ink.",
             question="What is the call number of A Treatise on Tides and Moons?",
             answer="RB-3021", keys=["Tides and Moons"]),
    ]

    def __init__(self, rng):
        super().__init__(rng)
        self.used = set()
        self.per_section = 0

    def header(self):
        return ("Catalogue of the Fenwick Subscription Library\n"
                "Arranged by subject. Each record gives the call number and title, the author, the "
                "place and year of publication, the length, the shelf and notes on the copy. Rare "
                "books are marked RB, listed among the other books of their subject, and kept in the cabinet in "
                "the librarian's office unless their shelf is given.")

    def title(self):
        r = self.rng
        return fill(r, r.choice([
            "{a_adj} {genre} of the {noun} of {place}",
            "The {noun} of {place}",
            "{noun} and {noun2}: a {genre} for the general reader",
            "Notes on the {noun} of {place}",
            "The Life and Letters of {person}",
            "{a_genre} of a Tour through {place}",
            "Observations on {noun}, chiefly in {place}",
            "{place} and its {noun}",
            "The {adj} Book of {noun}",
            "Letters from {place}",
        ]), a_adj=lambda r: article(r.choice(ADJECTIVES)), a_genre=lambda r: article(r.choice(GENRES)),
            adj=ADJECTIVES, genre=GENRES, noun=TITLE_NOUNS, noun2=TITLE_NOUNS, place=PLACES,
            person=person)

    def entry(self, i):
        r = self.rng
        per = 90
        prefix, subject = SECTIONS[(i // per) % len(SECTIONS)]
        lines = []
        if i % per == 0:
            lines.append("Section: %s" % subject)
        while True:
            call = "%s-%s.%s" % (prefix, code(r, 4), r.choice("123"))
            if call not in self.used:
                break
        self.used.add(call)
        title = self.title()
        lines.append("%s  %s." % (call, title))
        lines.append("Author: %s. Published: %s, %s. %s pages." % (
            person(r), r.choice(PLACES[:20] + ["London", "Edinburgh", "Dublin", "Bristol"]),
            year_words(r.randint(1700, 1899)), cap(words(r.randint(40, 900)))))
        lines.append("Shelf: Room %s, case %s, shelf %s." % (
            r.choice("ABCDE"), words(r.randint(1, 30)), words(r.randint(1, 8))))
        notes = r.sample(NOTES, r.randint(1, 3))
        lines.append(["Notes:"] + notes)
        return {"lines": lines, "narrative": len(lines) - 1}


# --- Ship's log ----------------------------------------------------------------

CREW = ["Abel Sallow", "Harry Keld", "Ned Carver", "Silas Tapping", "Owen Drury", "Tom Varley",
        "Luke Padgett", "Amos Fletcher", "Dick Rowntree", "Will Garside", "Kit Onslow",
        "Matthias Birch", "Ben Thwaite", "Sam Ingram", "Ivor Radley", "Hugh Maddox",
        "Percy Lacey", "Davy Norcross", "Robin Whitlock", "Alf Colby"]
OFFICERS = ["Mr. Tobias Fenn, first mate", "Mr. Adair Lowry, second mate", "Captain Edith Marrow"]
SAILS = ["fore topsail", "main topgallant", "mizzen staysail", "flying jib", "main course",
         "fore course", "spanker", "inner jib"]


class ShipsLog(Doc):
    name = "ships_log"
    target_chars = 600000
    needles = [
        dict(id="ships_log/strongbox", depth=0.1, kind="sentence",
             text="The Captain ordered the ship's strongbox to be hidden beneath the floor of the sail locker, and told only the first mate where it lies.",
             question="Where was the ship's strongbox hidden?",
             answer="beneath the floor of the sail locker", keys=["strongbox"]),
        dict(id="ships_log/cat", depth=0.35, kind="sentence",
             text="The ship's cat, a grey tom named Admiral Pickering, caught his fortieth rat of the voyage in the bread room and was given a saucer of condensed milk.",
             question="What is the name of the ship's cat?",
             answer="Admiral Pickering", keys=["ship's cat"]),
        dict(id="ships_log/whaler", depth=0.6, kind="sentence",
             text="Spoke the whaler Constance of New Bedford, eleven months out; her master sent across two barrels of oranges, for which we gave him tobacco and newspapers.",
             question="Which whaler sent the crew two barrels of oranges?",
             answer="Constance", keys=["oranges"]),
        dict(id="ships_log/island", depth=0.9, kind="sentence",
             text="The small island sighted at dawn is on no chart; the Captain named it Tallis Island after the boatswain, Piet Tallis, who first saw it from the foretop.",
             question="After whom did the Captain name the new island?",
             answer="Piet Tallis", keys=["Tallis Island"]),
    ]

    def __init__(self, rng):
        super().__init__(rng)
        self.lat, self.lon = 50 * 60 + 10, 5 * 60 + 3  # minutes of arc: north, west

    def header(self):
        return ("Log of the Barque Halcyon\n"
                "Kept by Captain Edith Marrow and the officers of the watch on a voyage from Port "
                "Averley to the Cinnamon Islands and home again. One entry for each day at sea: the "
                "wind and weather, the course and the noon position, the distance run, and what "
                "happened aboard.")

    def pos(self):
        def fmt(m, pos_dir, neg_dir):
            d = pos_dir if m >= 0 else neg_dir
            m = abs(m)
            return "%s %s %s" % (plural(m // 60, "degree"), plural(m % 60, "minute"), d)
        return "latitude %s, longitude %s" % (fmt(self.lat, "north", "south"), fmt(self.lon, "west", "east"))

    def entry(self, i):
        r = self.rng
        run = r.randint(40, 230)
        # Outward (south) for the first half, home (north) for the second.
        south = 1 if (i // 350) % 2 == 0 else -1
        self.lat = max(-50 * 60, min(55 * 60, self.lat - south * r.randint(0, run // 4)))
        self.lon = max(-100 * 60, min(30 * 60, self.lon + r.randint(-run // 2, run // 2)))
        course = r.choice(COMPASS_FINE)
        head = "Day %s of the voyage, %s." % (words(i + 1), WEEKDAYS[i % 7])
        nav = ("Wind %s, %s. %s Course %s under %s. Noon position by observation: %s. "
               "Run since yesterday noon: %s miles." % (
                   r.choice(COMPASS_FINE), r.choice(["light and variable", "moderate", "fresh",
                                                     "strong", "a whole gale", "light", "squally"]),
                   r.choice(["Long swell from the south.", "Sea moderate.", "Heavy cross sea.",
                             "Smooth sea.", "Overcast, with rain at times.", "Fine and clear.",
                             "Thick fog until the forenoon watch.", "Hot, with a haze."]),
                   course, r.choice(["all plain sail", "topsails and courses", "double-reefed topsails",
                                     "lower topsails only", "royals and topgallants", "bare poles for two hours"]),
                   self.pos(), words(run)))
        events = []
        events += fill_some(r, r.randint(3, 6), [
                "{crew} was set to mend the {sail}, which split along a seam in the night.",
                "Sighted a {vessel} hull down to the {dir}; she did not answer our signal.",
                "A school of {animal} kept company with the ship through the {watch} watch.",
                "Pumped ship at the change of the watch: {n} inches in the well, which is usual for her.",
                "{crew} complains of {ailment}; the Captain dosed him with {remedy}.",
                "Served out {food} to the people.",
                "Rain squalls in the afternoon; caught {n} gallons of fresh water in the awnings.",
                "Exercised the boats' crews at lowering and hoisting the quarter boats.",
                "The carpenter replaced a sprung plank in the {part}.",
                "Took in the {sail} at {hour} bells in the {watch} watch, the wind freshening.",
                "Set the {sail} again at daylight.",
                "Saw {bird} at dawn; the mate thinks land lies somewhere to the {dir}.",
                "{pair} were logged for quarrelling on the forecastle.",
                "Holystoned the decks and scraped the {part}.",
                "Opened a new cask of {food}; found it sound.",
                "Overhauled the {gear}.",
                "A heavy sea came over the waist and stove in the {part}; no one hurt.",
                "Calm for {n} hours; the ship rolling heavily with nothing to steady her.",
                "Prayers read on the quarterdeck by the Captain at the change of the watch.",
                "{crew} took the wheel for the first time and steered well.",
                "Lunar distances taken by the Captain and the second mate; they agree within {n} miles.",
                "The chronometer compared with the deck watch and found to be keeping good time.",
                "Sent down the {sail} for repairs and bent a new one.",
                "{crew} fell from the {mast} rigging and sprained his wrist.",
            ], crew=CREW, pair=lambda r: " and ".join(r.sample(CREW, 2)), sail=SAILS, dir=COMPASS, watch=["morning", "forenoon", "afternoon",
                                                                        "first", "middle", "dog"],
                vessel=["brig", "full-rigged ship", "schooner", "steamer", "barque", "whaler"],
                animal=["porpoises", "dolphins", "flying fish", "bonito", "albacore"],
                n=lambda r: words(r.randint(2, 30)), hour=lambda r: words(r.randint(1, 8)),
                ailment=["a fever", "a sore throat", "boils", "a strained back", "toothache",
                         "a poisoned finger"],
                remedy=["salts", "quinine", "a blister", "laudanum", "lime juice", "rest in his hammock"],
                food=["salt beef", "salt pork", "pease", "rice", "biscuit", "plum duff", "lime juice",
                      "preserved potatoes", "molasses"],
                part=["waist", "forecastle head", "bulwarks", "galley door", "main hatch", "bowsprit"],
                bird=["a frigate bird", "boobies", "a tropic bird", "shearwaters", "albatrosses",
                      "Cape pigeons", "a flight of terns"],
                gear=["running rigging", "braces", "topsail halyards", "chain cables", "anchor gear",
                      "signal flags", "lifebuoys"],
                mast=["fore", "main", "mizzen"])
        sign = "Entered by %s." % r.choice(OFFICERS)
        return {"lines": [head, nav, events, sign], "narrative": 2}


DOCS = [KeepersLog, CouncilMinutes, LabNotebook, LibraryCatalogue, ShipsLog]

# A short inline document, for the job that passes its text in the job file.
MEMO = ("Memo to all staff of the Fenwick Subscription Library. The reading room will close at "
        "noon on Friday while the stairwell is painted. Parcels that arrive in the afternoon may be "
        "collected from Ruth Abernethy at the front desk until four o'clock. The painters ask that "
        "nobody touch the handrail before Monday.")
MEMO_FACT = {"id": "memo/parcels", "question": "From whom can parcels be collected on Friday afternoon?",
             "answer": "Ruth Abernethy", "needle": MEMO.split(". ")[2] + ".",
             "depth_chars": MEMO.find("Parcels"), "depth": round(MEMO.find("Parcels") / len(MEMO), 4),
             "answer_chars": MEMO.find("Ruth Abernethy")}


def make_jobs(facts):
    """The demo's jobs (launch/job.proto in protobuf JSON), from the facts."""
    q = {f["id"]: f["question"] for d in facts for f in d["facts"]}
    return [
        {"id": "keepers-log", "document_file": "documents/keepers_log.txt", "max_new_tokens": 24},
        {"id": "keepers-log-sampled", "document_file": "documents/keepers_log.txt",
         "question": q["keepers_log/relief_keeper"], "temperature": 0.7, "top_p": 0.9, "seed": 7},
        {"id": "council-minutes", "document_file": "documents/council_minutes.txt",
         "question": [q["council_minutes/fire_pump"], q["council_minutes/tannery"],
                      q["council_minutes/church_bell"]],
         "max_new_tokens": 12},
        {"id": "lab-notebook", "document_file": "documents/lab_notebook.txt",
         "question": [q["lab_notebook/freezer_code"], q["lab_notebook/collaborator"]],
         "cache": {"slots": 256, "snapkv": {"window": 16}}},
        {"id": "library-catalogue", "document_file": "documents/library_catalogue.txt",
         "question": q["library_catalogue/velmont_author"],
         "cache": {"streaming": {}, "slots": 256}},
        {"id": "ships-log", "document_file": "documents/ships_log.txt",
         "question": [q["ships_log/cat"], q["ships_log/island"]]},
        {"id": "memo", "document": MEMO, "question": q["memo/parcels"]},
    ]


def outputs(scale):
    """{relative path: bytes} of everything the generator writes."""
    files, facts = {}, []
    for cls in DOCS:
        text, doc_facts = build(cls, scale)
        path = "documents/%s.txt" % cls.name
        files[path] = text.encode("ascii")
        facts.append({"name": cls.name, "document_file": path, "chars": len(text),
                      "lines": text.count("\n"), "facts": doc_facts})
    facts.append({"name": "memo", "document": MEMO, "chars": len(MEMO), "lines": 0,
                  "facts": [MEMO_FACT]})
    meta = {
        "about": "Facts planted in the kvfold demo documents by tools/demo/make_demo.py; see tools/demo/README.md.",
        "seed": SEED,
        "scale": scale,
        "documents": facts,
    }
    files["facts.json"] = (json.dumps(meta, indent=2) + "\n").encode("ascii")
    files["jobs.jsonl"] = "".join(json.dumps(j) + "\n" for j in make_jobs(facts)).encode("ascii")
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=HERE, help="output folder (default: this script's folder)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every document's length")
    ap.add_argument("--check", action="store_true",
                    help="compare with the files in --out instead of writing; exit 1 on a difference")
    args = ap.parse_args()
    files = outputs(args.scale)
    if args.check:
        stale = []
        for rel, data in sorted(files.items()):
            p = os.path.join(args.out, rel)
            if not os.path.exists(p) or open(p, "rb").read() != data:
                stale.append(rel)
        for rel in stale:
            print("differs: %s" % rel)
        if stale:
            print("rerun: python3 tools/demo/make_demo.py")
            return 1
        print("up to date: %d files" % len(files))
        return 0
    os.makedirs(os.path.join(args.out, "documents"), exist_ok=True)
    for rel, data in sorted(files.items()):
        with open(os.path.join(args.out, rel), "wb") as f:
            f.write(data)
        print("%9d  %s" % (len(data), os.path.join(args.out, rel)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
