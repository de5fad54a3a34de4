#!/usr/bin/env python3
"""Kaldi-style data directories from the Asterisk English core sound prompts.

<asterisk_root>/core-sounds-en.txt holds "<name>: <transcript>" lines (name = path under wav/
without .wav); recordings without a transcript (beeps, tones) are left out. One speaker, so the
split is by prompt: a deterministic hash puts ~10 % in dev and ~10 % in test; every prompt is also
in train_pretrain (unlabelled use).

Transcripts are normalised for letter-based CTC: lower case, "*" -> "star", "#" -> "pound",
numbers written out as the speaker reads them ("press 1" -> "press one", "500" -> "five hundred",
extension "1234" -> "one two three four"), other punctuation removed (apostrophes kept).
"""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path


ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
    "seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def cardinal(number: int) -> str:
    if number < 20:
        return ONES[number]
    if number < 100:
        return TENS[number // 10] + ("" if number % 10 == 0 else " " + ONES[number % 10])
    if number < 1000:
        return ONES[number // 100] + " hundred" + ("" if number % 100 == 0 else " " + cardinal(number % 100))
    return cardinal(number // 1000) + " thousand" + ("" if number % 1000 == 0 else " " + cardinal(number % 1000))


def spoken_number(digits: str) -> str:
    """Up to two digits, or a round hundred ("500", "8500"), are read as a number; other runs of three or
    more digits (extensions, passwords, "H.323") digit by digit."""
    if len(digits) <= 2 or (digits.endswith("00") and len(digits) <= 5):
        return cardinal(int(digits))
    return " ".join(ONES[int(d)] for d in digits)


def normalise(text: str) -> str:
    text = text.lower().replace("*", " star ").replace("#", " pound ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    text = re.sub(r"[0-9]+", lambda m: f" {spoken_number(m.group())} ", text)
    return " ".join(text.split())


def split_of(name: str) -> str:
    bucket = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train_ft"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asterisk_root", type=Path, required=True)
    parser.add_argument("--data_dir", type=Path, default=Path("data"))
    args = parser.parse_args(argv)
    listing = args.asterisk_root / "core-sounds-en.txt"
    if not listing.is_file():
        raise SystemExit(f"prepare_asterisk: {listing} not found; point --asterisk_root at the folder holding "
                         "core-sounds-en.txt and wav/")
    splits: dict[str, list[tuple[str, str, str]]] = {"train_pretrain": [], "train_ft": [], "dev": [], "test": []}
    missing = 0
    for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        name, sep, text = line.partition(":")
        text = normalise(text)
        wav = args.asterisk_root / "wav" / f"{name.strip()}.wav"
        if not sep or not text:
            continue
        if not wav.is_file():
            missing += 1
            continue
        utt = "allison-" + name.strip().replace("/", "-")
        row = (utt, str(wav.resolve()), text)
        splits["train_pretrain"].append(row)
        splits[split_of(name.strip())].append(row)
    if missing:
        print(f"prepare_asterisk: {missing} transcribed prompts have no wav file; skipped", file=sys.stderr)
    if not splits["test"]:
        raise SystemExit(f"prepare_asterisk: no usable prompts under {args.asterisk_root}/wav")
    for name, rows in splits.items():
        out = args.data_dir / name
        out.mkdir(parents=True, exist_ok=True)
        rows.sort()
        (out / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p, _ in rows), encoding="utf-8")
        (out / "text").write_text("".join(f"{u} {t}\n" for u, _, t in rows), encoding="utf-8")
        (out / "utt2spk").write_text("".join(f"{u} allison\n" for u, _, _ in rows), encoding="utf-8")
        (out / "spk2utt").write_text("allison " + " ".join(u for u, _, _ in rows) + "\n", encoding="utf-8")
        print(f"prepare_asterisk: {name}: {len(rows)} utterances", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
