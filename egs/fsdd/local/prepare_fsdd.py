#!/usr/bin/env python3
"""Kaldi-style data directories for the Free Spoken Digit Dataset.

Files are named <digit>_<speaker>_<index>.wav; indices 0-4 are the dataset's official test split.
Splits (speakers never seen in fine-tuning are the test set):
  train_pretrain  every recording (unlabelled use; the template's --extra_unlabelled_dir pools more)
  train_ft        --labelled_per_digit recordings (indices 5..) of each digit for each fine-tuning speaker
                  (default 7 x 10 digits x 4 speakers = 280 = 9.3 % of the labels)
  dev             the fine-tuning speakers' official test indices 0-4
  test            every recording of the held-out speakers
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PATTERN = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def write_dir(out: Path, utts: list[tuple[str, str, str, str]]) -> None:
    """utts: (utt_id, speaker, path, transcript or '')."""
    out.mkdir(parents=True, exist_ok=True)
    utts = sorted(utts)
    with open(out / "wav.scp", "w") as f:
        f.writelines(f"{u} {p}\n" for u, _, p, _ in utts)
    with open(out / "utt2spk", "w") as f:
        f.writelines(f"{u} {s}\n" for u, s, _, _ in utts)
    spk2utt: dict[str, list[str]] = {}
    for u, s, _, _ in utts:
        spk2utt.setdefault(s, []).append(u)
    with open(out / "spk2utt", "w") as f:
        f.writelines(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items()))
    if all(t for *_, t in utts):
        with open(out / "text", "w") as f:
            f.writelines(f"{u} {t}\n" for u, _, _, t in utts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsdd_root", type=Path, required=True, help="folder holding recordings/")
    parser.add_argument("--data_dir", type=Path, default=Path("data"))
    parser.add_argument("--test_speakers", default="theo,yweweler")
    parser.add_argument("--labelled_per_digit", type=int, default=7)
    args = parser.parse_args(argv)

    rec = args.fsdd_root / "recordings"
    files = sorted(rec.glob("*.wav")) if rec.is_dir() else []
    if not files:
        raise SystemExit(f"prepare_fsdd: no recordings in {rec}; point --fsdd_root at a clone of "
                         "https://github.com/Jakobovski/free-spoken-digit-dataset")
    test_speakers = set(args.test_speakers.split(","))
    pretrain, train_ft, dev, test = [], [], [], []
    for path in files:
        m = PATTERN.match(path.name)
        if not m:
            print(f"prepare_fsdd: skipping {path} (name is not <digit>_<speaker>_<index>.wav)", file=sys.stderr)
            continue
        digit, speaker, index = int(m.group(1)), m.group(2), int(m.group(3))
        # Kaldi convention: utterance ids start with the speaker id, so sorting keeps speakers together.
        utt = f"{speaker}-{digit}-{index:02d}"
        entry = (utt, speaker, str(path.resolve()), WORDS[digit])
        pretrain.append((utt, speaker, entry[2], ""))
        if speaker in test_speakers:
            test.append(entry)
        elif index < 5:
            dev.append(entry)
        elif index < 5 + args.labelled_per_digit:
            train_ft.append(entry)
    if not test or not train_ft:
        raise SystemExit(f"prepare_fsdd: empty split (test speakers {sorted(test_speakers)} not in {rec}?)")
    for name, utts in (("train_pretrain", pretrain), ("train_ft", train_ft), ("dev", dev), ("test", test)):
        write_dir(args.data_dir / name, utts)
        print(f"prepare_fsdd: {name}: {len(utts)} utterances", file=sys.stderr)
    print(f"prepare_fsdd: {len(train_ft)} labelled fine-tuning utterances = "
          f"{100 * len(train_ft) / len(files):.1f} % of the corpus's labels", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
