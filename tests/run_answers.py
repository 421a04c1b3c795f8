"""The answers in a `kvfold run` output file, one line per job, sorted by id.

Fails (non-zero exit) when the file is not valid after an interruption: a
last line that is not whole, a line that is not JSON, or a job written twice.
Used by the fault tests to compare an interrupted-and-resumed run with an
uninterrupted one.
"""
import json
import sys

text = open(sys.argv[1]).read()
assert text == "" or text.endswith("\n"), "the last line is not whole"
seen = {}
for n, line in enumerate(text.split("\n")[:-1], 1):
    j = json.loads(line)  # raises on a half or corrupt line
    assert j["id"] not in seen, f"line {n}: job {j['id']} written twice"
    seen[j["id"]] = ";".join(",".join(map(str, a["ids"])) for a in j["answers"])
for i in sorted(seen):
    print(i, seen[i])
