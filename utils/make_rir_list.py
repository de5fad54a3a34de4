#!/usr/bin/env python3
"""Make the room-impulse-response list for augmentation from a folder of RIR audio files.

    utils/make_rir_list.py --rir_dir ../shared/data/rir --out_dir data/rir

Every .wav/.flac below --rir_dir (recursively) is listed in <out_dir>/wav.scp and <out_dir>/utt2dur,
sorted by id, ids made from the path below the folder. Multi-channel RIRs keep their first channel
(averaging microphones at different positions would comb-filter the response; --channel mix averages)
and other rates are resampled, as copies under <out_dir>/converted/. Unreadable files are skipped with
a warning. Use the list as augmentation_conf: {rir_scp: <out_dir>/wav.scp}.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aqc.augment.make_list import CHANNEL_MODES, ListError, make_audio_list


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rir_dir", required=True, type=Path, help="folder holding RIR audio files")
    parser.add_argument("--out_dir", required=True, type=Path, help="where wav.scp, utt2dur and converted/ go")
    parser.add_argument("--sample_rate", type=int, default=16000,
                        help="rate of the listed files (default: %(default)s)")
    parser.add_argument("--channel", choices=CHANNEL_MODES, default="first",
                        help="how a multi-channel RIR becomes mono (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")

    try:
        summary = make_audio_list(args.rir_dir, ["."], args.out_dir, args.sample_rate, channel=args.channel,
                                  what="RIR")
    except ListError as e:
        raise SystemExit(f"make_rir_list: {e}") from None
    logging.info("listed %d RIR file(s) in %s (%d converted, %d unreadable skipped)",
                 summary.listed, args.out_dir / "wav.scp", summary.converted, summary.skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
