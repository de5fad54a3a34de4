#!/usr/bin/env python3
"""Invert utt2spk into spk2utt (speakers and their utterances in C-locale byte order).

    utils/utt2spk_to_spk2utt.py data/train/utt2spk > data/train/spk2utt
    utils/utt2spk_to_spk2utt.py < data/train/utt2spk > data/train/spk2utt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO

from validate_data_dir import c_key, spk2utt_from_utt2spk


def read_utt2spk(f: TextIO, name: str) -> Dict[str, str]:
    utt2spk: Dict[str, str] = {}
    for lineno, line in enumerate(f, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"{name}:{lineno}: expected '<utt> <speaker>', got {line.strip()!r}")
        if parts[0] in utt2spk and utt2spk[parts[0]] != parts[1]:
            raise ValueError(
                f"{name}:{lineno}: utterance {parts[0]!r} has two speakers ({utt2spk[parts[0]]!r}, "
                f"{parts[1]!r}); keep one line per utterance (utils/fix_data_dir.py)"
            )
        utt2spk[parts[0]] = parts[1]
    return utt2spk


def format_spk2utt(spk2utt: Dict[str, List[str]]) -> str:
    return "".join(f"{spk} {' '.join(spk2utt[spk])}\n" for spk in sorted(spk2utt, key=c_key))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Write spk2utt (stdout) from utt2spk (file or stdin).")
    parser.add_argument("utt2spk", nargs="?", default="-", help="utt2spk file; '-' or none reads stdin")
    args = parser.parse_args(argv)
    try:
        if args.utt2spk == "-":
            utt2spk = read_utt2spk(sys.stdin, "<stdin>")
        else:
            with open(Path(args.utt2spk), encoding="utf-8") as f:
                utt2spk = read_utt2spk(f, args.utt2spk)
    except (OSError, ValueError) as e:
        print(f"utt2spk_to_spk2utt.py: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(format_spk2utt(spk2utt_from_utt2spk(utt2spk)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
