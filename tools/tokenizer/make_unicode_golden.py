#!/usr/bin/env python3
"""Writes tests/golden/tokenizers/unicode_golden.json from Python (reference
for models/tokenizer/unicode_test.cc).

Usage (from the repository root):
  python3 tools/tokenizer/make_unicode_golden.py

Contents:
  normalization_identity: single code points unchanged by all four forms.
  normalization: strings (as code point lists) with their NFC, NFD, NFKC and
    NFKD from unicodedata.normalize: tricky strings plus every code point
    below U+3000 and a sample of Hangul syllables and CJK compatibility
    ideographs, each on its own.
  lossy: byte strings (hex) with bytes.decode("utf-8", "replace"). Python
    replaces each maximal subpart of an ill-formed sequence with one U+FFFD,
    the same practice as Rust's String::from_utf8_lossy (which tokenizers uses).
  fold: code points with str.casefold() (full case folding).
"""
import json
import os
import sys
import unicodedata

OUT = "tests/golden/tokenizers/unicode_golden.json"

TRICKY = [
    "", "abc", "Ame\u0301lie", "A\u030a", "\u212b", "\u00c5", "\u0958",
    "\u095f\u093c", "\ufb01", "\uff11\uff12\uff13", "\u1e9b\u0323",
    "\u1ec7\u0301\u0323", "Vi\u1ec7t Nam", "Tie\u0302\u0301ng Vie\u0323\u0302t",
    "\ud55c\uad6d\uc5b4", "\u1112\u1161\u11ab", "\u1100\u1161", "\uac00\u11a8",
    "\u1100\u1100\u1161\u11a8\u11a8", "q\u0307\u0323", "a\u0328\u0301\u0323",
    "\u0344", "\u0f73", "\u0f77", "\u2126", "\u1f80\u0301", "e\u0301\u0301",
    "\u00e9\u0302\u0316", "\u0301a", "\u0300\u0316\u0301",
    "\u3300 \u32ff \u2474 \u00bd \u2460", "\ufdfa", "\u01c4\u01c5\u01c6",
    "\u1100\u1161\u0300", "\u0b47\u0b3e", "\u0b47\u0300\u0b3e", "\u0cc6\u0cc2\u0cd5",
    "\U0001d15e\U0001d165", "\U0001d160", "\U0002f800", "\u2adc", "\u2add\u0338",
    "\u05e9\u05bc\u05c1", "\ufb2c", "\u0627\u0653", "\u0915\u093c", "\u0929",
    "\U000110ab", "\U00011099\U000110ba", "\u00a0 \u2003 \u3000", "\u1e0b\u0323",
    "\u1e0d\u0307", "\u0041\u030a\u0301", "\u0071\u0307\u0323\u0301",
    "hello \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f44d\U0001f3fd",
]


def cps(s):
    return [ord(c) for c in s]


def main():
    norm = []
    singles = list(range(0x3000))
    singles += list(range(0xAC00, 0xD7A4, 97)) + [0xD7A3]
    singles += list(range(0xF900, 0xFB50)) + list(range(0xFE30, 0xFF00))
    singles += list(range(0x1D15E, 0x1D1C1)) + list(range(0x2F800, 0x2FA1E))
    singles = [c for c in singles if not 0xD800 <= c <= 0xDFFF]
    identity = []  # single code points that all four forms leave alone
    for s in TRICKY + [chr(c) for c in singles]:
        forms = {f: cps(unicodedata.normalize(f.upper(), s))
                 for f in ("nfc", "nfd", "nfkc", "nfkd")}
        if len(s) == 1 and all(v == cps(s) for v in forms.values()):
            identity.append(ord(s))
        else:
            norm.append({"s": cps(s)} | forms)
    lossy_inputs = [
        b"", b"abc", b"\x80", b"\xbf\x80", b"\xc0\x80", b"\xc1\xbf", b"\xc2",
        b"\xc2\x41", b"\xe0\x80\x80", b"\xe0\xa0", b"\xe0\xa0\x41",
        b"\xed\xa0\x80", b"\xed\x9f\xbf", b"\xef\xbf\xbf", b"\xf0\x80\x80\x80",
        b"\xf0\x90\x80", b"\xf0\x90\x80\x41", b"\xf4\x8f\xbf\xbf",
        b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xff\xfe", b"a\xe2\x82",
        b"\xe2\x82\xac\xe2\x82", b"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa",
        b"\xf0\x9f\x98", b"\xf0\x9f\x98\x80\x80", b"\xc3\x28", b"\xa0\xa1",
        b"\xe2\x28\xa1", b"\xf0\x28\x8c\xbc", b"\xf8\xa1\xa1\xa1\xa1",
        b"\x61\xf1\x80\x80\xe1\x80\xc2\x62\x80\x63\x80\xbf\x64",
    ]
    lossy = [{"hex": b.hex(), "text": cps(b.decode("utf-8", "replace"))}
             for b in lossy_inputs]
    fold = []
    for c in list(range(0x250)) + list(range(0x370, 0x530)) + [
            0x1E9E, 0x1F88, 0x1FBC, 0x212A, 0x212B, 0x2126, 0xFB00, 0xFB05,
            0xFB06, 0x130, 0x131, 0x17F, 0x3C2, 0x10400, 0x13F8, 0xAB70,
            0x1E921]:
        fold.append({"c": c, "full": cps(chr(c).casefold())})
    data = {
        "generator": "tools/tokenizer/make_unicode_golden.py",
        "python": sys.version.split()[0],
        "unicode": unicodedata.unidata_version,
        "normalization": norm,
        "normalization_identity": identity,
        "lossy": lossy,
        "fold": fold,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
