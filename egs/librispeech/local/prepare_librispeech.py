#!/usr/bin/env python3
"""Kaldi-style data directories from LibriSpeech and Libri-light's limited-supervision sets.

LibriSpeech layout: <librispeech_root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac with
<speaker>-<chapter>.trans.txt beside them. Libri-light: <librilight_root>/1h/{0..5}/{clean,other}/...
and 9h/{clean,other}/... in the same layout (10 min = 1h/0; 1 h = 1h/*; 10 h = 1h/* + 9h).

Writes data/<name> for each requested LibriSpeech split (dashes become underscores: dev_clean) and
data/train_<subset> for the fine-tuning subset.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

PRETRAIN_SPLITS = {
    "960h": ["train-clean-100", "train-clean-360", "train-other-500"],
    "460h": ["train-clean-100", "train-clean-360"],
    "360h": ["train-clean-360"],
    "100h": ["train-clean-100"],
}
LIBRILIGHT = {"10min": ["1h/0"], "1h": [f"1h/{i}" for i in range(6)], "10h": [f"1h/{i}" for i in range(6)] + ["9h"]}


def progress(items, desc):
    try:
        from tqdm import tqdm
        return tqdm(items, desc=desc, file=sys.stderr, disable=len(items) < 1000)
    except ImportError:  # pragma: no cover
        return items


def scan(root: Path, with_text: bool = True) -> list[tuple[str, str, str, str]]:
    """(utt, speaker, path, text) for every flac under root; text from the chapters' trans.txt."""
    if not root.is_dir():
        raise SystemExit(f"prepare_librispeech: {root} not found; check --librispeech_root/--librilight_root")
    transcripts: dict[str, str] = {}
    for trans in root.rglob("*.trans.txt"):
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt, _, text = line.partition(" ")
            if utt:
                transcripts[utt] = text.strip()
    flacs = sorted(root.rglob("*.flac"))
    if not flacs:
        raise SystemExit(f"prepare_librispeech: no .flac files under {root}")
    rows = []
    for flac in progress(flacs, f"scan {root.name}"):
        utt = flac.stem
        if with_text and utt not in transcripts:
            raise SystemExit(f"prepare_librispeech: {flac} has no transcript in its chapter's .trans.txt")
        rows.append((utt, utt.split("-")[0], str(flac.resolve()), transcripts.get(utt, "")))
    return rows


def write_dir(out: Path, rows: list[tuple[str, str, str, str]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(set(rows))
    ids = [r[0] for r in rows]
    if len(ids) != len(set(ids)):
        raise SystemExit(f"prepare_librispeech: duplicate utterance ids for {out}")
    with open(out / "wav.scp", "w", encoding="utf-8") as f:
        f.writelines(f"{u} {p}\n" for u, _, p, _ in rows)
    with open(out / "utt2spk", "w", encoding="utf-8") as f:
        f.writelines(f"{u} {s}\n" for u, s, _, _ in rows)
    spk2utt: dict[str, list[str]] = {}
    for u, s, _, _ in rows:
        spk2utt.setdefault(s, []).append(u)
    with open(out / "spk2utt", "w", encoding="utf-8") as f:
        f.writelines(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items()))
    if all(t for *_, t in rows):
        with open(out / "text", "w", encoding="utf-8") as f:
            f.writelines(f"{u} {t}\n" for u, _, _, t in rows)
    print(f"prepare_librispeech: {out}: {len(rows)} utterances", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--librispeech_root", type=Path, required=True)
    parser.add_argument("--librilight_root", type=Path, default=None)
    parser.add_argument("--pretrain_data", choices=sorted(PRETRAIN_SPLITS), default="960h")
    parser.add_argument("--finetune_subset", choices=["10min", "1h", "10h", "100h"], default="10h")
    parser.add_argument("--eval_splits", default="dev-clean,dev-other,test-clean,test-other")
    parser.add_argument("--data_dir", type=Path, default=Path("data"))
    args = parser.parse_args(argv)

    pretrain = []
    for split in PRETRAIN_SPLITS[args.pretrain_data]:
        pretrain += scan(args.librispeech_root / split)
    write_dir(args.data_dir / f"train_{args.pretrain_data}", pretrain)
    if args.finetune_subset == "100h":
        finetune = scan(args.librispeech_root / "train-clean-100")
    else:
        if args.librilight_root is None:
            raise SystemExit(f"prepare_librispeech: --finetune_subset {args.finetune_subset} needs --librilight_root "
                             "(Libri-light's librispeech_finetuning folder)")
        finetune = []
        for part in LIBRILIGHT[args.finetune_subset]:
            finetune += scan(args.librilight_root / part)
    write_dir(args.data_dir / f"train_{args.finetune_subset}", finetune)
    for split in args.eval_splits.split(","):
        write_dir(args.data_dir / split.replace("-", "_"), scan(args.librispeech_root / split))
    return 0


if __name__ == "__main__":
    sys.exit(main())
