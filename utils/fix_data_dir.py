#!/usr/bin/env python3
"""Make a Kaldi-style data directory consistent: sort, de-duplicate, keep common utterances.

    utils/fix_data_dir.py data/train

Every file is sorted in C-locale byte order with one line per key (the first line of a duplicate key
wins); only utterances present in every utterance-keyed file are kept (and, with ``segments``, whose
recording is in ``wav.scp``); ``wav.scp`` keeps the recordings still used; ``spk2utt`` is rebuilt from
``utt2spk``. The originals are copied to ``<dir>/.backup/`` first. Prints how many lines each file lost.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

from validate_data_dir import c_key, parse_segment, read_entries, first_wins, spk2utt_from_utt2spk, write_table

UTT_FILES = ("text", "utt2spk", "utt2num_samples", "utt2dur", "utt2num_frames", "utt2lang", "utt2uniq",
             "utt2category", "feats.scp")
REC_FILES = ("reco2dur", "reco2file_and_channel")
SPK_FILES = ("spk2gender",)


def load(path: Path, stats: Dict[str, List[int]]) -> Dict[str, str]:
    entries = read_entries(path)
    table = first_wins(entries)
    stats[path.name] = [len(entries), len(entries) - len(table)]  # lines before, duplicates
    return table


def common_utterances(tables: Dict[str, Dict[str, str]], has_segments: bool) -> Set[str]:
    names = [n for n in (*UTT_FILES, "segments") if n in tables]
    if not has_segments:
        names.append("wav.scp")
    keep = set.intersection(*(set(tables[n]) for n in names))
    if has_segments:
        wav = tables["wav.scp"]
        keep = {u for u in keep if (seg := parse_segment(tables["segments"][u])) is not None and seg[0] in wav}
    return keep


def fix(data_dir: Path, extra_utt_files: Sequence[str] = (), backup: bool = True) -> Dict[str, List[int]]:
    """Fix ``data_dir`` in place; returns ``{file: [lines before, duplicates, lines after]}``."""
    if not (data_dir / "wav.scp").is_file():
        raise FileNotFoundError(f"{data_dir}/wav.scp not found: a data directory needs one")
    utt_files = (*UTT_FILES, *extra_utt_files)
    present = [n for n in ("wav.scp", "segments", "spk2utt", *utt_files, *REC_FILES, *SPK_FILES)
               if (data_dir / n).is_file()]
    stats: Dict[str, List[int]] = {}
    tables = {n: load(data_dir / n, stats) for n in present}
    has_segments = "segments" in tables
    keep = common_utterances({n: t for n, t in tables.items() if n in (*utt_files, "segments", "wav.scp")},
                             has_segments)
    if backup:
        bdir = data_dir / ".backup"
        bdir.mkdir(exist_ok=True)
        for n in present:
            shutil.copy2(data_dir / n, bdir / n)
    out: Dict[str, Dict[str, str]] = {}
    for n in (*utt_files, "segments"):
        if n in tables:
            out[n] = {u: v for u, v in tables[n].items() if u in keep}
    if has_segments:
        recs = {parse_segment(v)[0] for v in out["segments"].values()}
    else:
        recs = keep
    out["wav.scp"] = {r: v for r, v in tables["wav.scp"].items() if r in recs}
    for n in REC_FILES:
        if n in tables:
            out[n] = {r: v for r, v in tables[n].items() if r in recs}
    if "utt2spk" in out:
        spk2utt = spk2utt_from_utt2spk(out["utt2spk"])
        out["spk2utt"] = {s: " ".join(us) for s, us in spk2utt.items()}
        for n in SPK_FILES:
            if n in tables:
                out[n] = {s: v for s, v in tables[n].items() if s in spk2utt}
    for n, table in out.items():
        write_table(data_dir / n, table)
        stats.setdefault(n, [0, 0]).append(len(table))
    return stats


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Sort a data directory's files, drop duplicate keys and utterances missing from any file."
    )
    parser.add_argument("data_dir", type=Path, help="Data directory, e.g. data/train")
    parser.add_argument("--utt_extra_files", nargs="*", default=[],
                        help="More utterance-keyed files to filter (besides " + ", ".join(UTT_FILES) + ")")
    parser.add_argument("--no_backup", action="store_true", help="Do not copy the originals to <dir>/.backup")
    args = parser.parse_args(argv)
    try:
        stats = fix(args.data_dir, args.utt_extra_files, not args.no_backup)
    except (OSError, ValueError) as e:
        print(f"fix_data_dir.py: {e}", file=sys.stderr)
        return 1
    for name in sorted(stats, key=c_key):
        before, dups, after = (stats[name] + [0, 0, 0])[:3]
        dropped = before - after
        detail = f" ({dups} duplicate key(s))" if dups else ""
        print(f"fix_data_dir.py: {args.data_dir}/{name}: {before} -> {after} lines, {dropped} dropped{detail}")
    n_utt = len(first_wins(read_entries(args.data_dir / ("segments" if (args.data_dir / "segments").is_file()
                                                           else "wav.scp"))))
    print(f"fix_data_dir.py: {args.data_dir}: {n_utt} utterances kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
