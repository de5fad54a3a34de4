#!/usr/bin/env python3
"""Make the background-noise list for augmentation from a MUSAN-layout folder (recipe stage 2).

    utils/make_noise_list.py --musan_root /data/musan --out_dir data/musan_noise
    utils/make_noise_list.py --musan_root /data/musan --subsets noise,music --out_dir data/musan_all

Writes <out_dir>/wav.scp ("<id> <path>") and <out_dir>/utt2dur ("<id> <seconds>"), sorted by id, ids
made from the path below the root (noise/free-sound/x.wav -> noise-free-sound-x). Files that are not
mono at --sample_rate get a converted copy under <out_dir>/converted/ (channels averaged). Unreadable
files are skipped with a warning. Use the list as augmentation_conf: {noise_scp: <out_dir>/wav.scp}.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aqc.augment.make_list import ListError, make_audio_list


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--musan_root", required=True, type=Path,
                        help="the MUSAN folder (holds noise/, music/, speech/)")
    parser.add_argument("--subsets", default="noise/free-sound",
                        help="comma-separated folders below the root, e.g. noise,music,speech (default: %(default)s)")
    parser.add_argument("--out_dir", required=True, type=Path, help="where wav.scp, utt2dur and converted/ go")
    parser.add_argument("--sample_rate", type=int, default=16000,
                        help="rate of the listed files (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")

    subsets = [s.strip().strip("/") for s in args.subsets.split(",") if s.strip()]
    if not subsets:
        raise SystemExit("make_noise_list: --subsets is empty")
    try:
        summary = make_audio_list(args.musan_root, subsets, args.out_dir, args.sample_rate, channel="mix",
                                  what="noise")
    except ListError as e:
        raise SystemExit(f"make_noise_list: {e}") from None
    logging.info("listed %d noise file(s) in %s (%d converted, %d unreadable skipped)",
                 summary.listed, args.out_dir / "wav.scp", summary.converted, summary.skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
