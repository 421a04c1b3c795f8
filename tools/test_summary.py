#!/usr/bin/env python3
"""Counts test cases from Bazel's test.xml files (gtest and sh tests alike)
and prints 'N passed, N failed, N skipped', so a gtest GTEST_SKIP (e.g. a GPU
test without a GPU) is reported as skipped, not passed. Exit 1 on failures."""
import pathlib
import sys
import xml.etree.ElementTree as ET

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bazel-testlogs")
passed = failed = skipped = 0
skipped_reasons = []
# Targets Bazel itself skipped (incompatible: CUDA targets without
# --config=cuda), read from the `bazel test` output if given.
if len(sys.argv) > 2:
    for line in pathlib.Path(sys.argv[2]).read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("//") and parts[1] == "SKIPPED":
            skipped += 1
            skipped_reasons.append(f"{parts[0]}: not built (CUDA targets need --config=cuda and nvcc)")
for xml in sorted(root.rglob("test.xml")):
    try:
        tree = ET.parse(xml)
    except ET.ParseError:
        failed += 1
        print(f"unreadable test result: {xml}", file=sys.stderr)
        continue
    for case in tree.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None or case.get("result") == "skipped":
            skipped += 1
            node = case.find("skipped")
            reason = node.get("message", "") if node is not None else ""
            skipped_reasons.append(f"{case.get('classname')}.{case.get('name')}: {reason.strip()}")
        else:
            passed += 1
for r in skipped_reasons:
    print(f"skipped {r}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
