#!/usr/bin/env python3
"""Write a recipe's RESULTS.md: WER/CER table, configs, stage timings, training curves.

    python -m aqc.bin.make_results --exp_dir exp --out RESULTS.md \\
        --test_set test_clean exp/asr/decode_test_clean/score/scores.json \\
        --configs conf/pretrain.yaml conf/finetune.yaml --stage_times exp/stage_times.tsv

Without --test_set, every ``<exp_dir>/**/scores.json`` is a row; see :mod:`aqc.results` for the
``stage_times.tsv`` format.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from espnet2.utils.types import str2bool

from aqc.results import DEFAULT_EMBED, make_results

logger = logging.getLogger("aqc.bin.make_results")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write RESULTS.md from scores.json files, configs, stage timings and training curves.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--exp_dir", required=True, help="Experiment directory searched for scores/images")
    parser.add_argument("--out", default="RESULTS.md", help="Markdown file to write")
    parser.add_argument(
        "--test_set", nargs=2, action="append", metavar=("NAME", "SCORES_JSON"), default=None,
        help="A table row: test set name and its scores.json (repeatable; default: all under --exp_dir)",
    )
    parser.add_argument("--configs", nargs="*", default=[], help="Config files used, linked in RESULTS.md")
    parser.add_argument(
        "--stage_times", default=None,
        help="stage<TAB>name<TAB>seconds file (default: <exp_dir>/stage_times.tsv if present)",
    )
    parser.add_argument(
        "--images", nargs="*", default=None,
        help="PNG files of training curves (default: <exp_dir>/*/images/*.png)",
    )
    parser.add_argument(
        "--tensorboard", nargs="*", default=None,
        help="Tensorboard directories (default: <exp_dir>/*/tensorboard)",
    )
    parser.add_argument(
        "--embed", default=",".join(DEFAULT_EMBED),
        help="Comma-separated image names (file stems) shown inline; other images are linked",
    )
    parser.add_argument("--title", default=None, help="Top heading (default: RESULTS)")
    parser.add_argument("--notes", default=None, help="Free text placed under the heading")
    parser.add_argument(
        "--environment", type=str2bool, default=True, help="Add date, versions and git commit"
    )
    parser.add_argument(
        "--rank_by", choices=("wer", "cer"), default="wer",
        help="The error rate the seed tables order systems by (cer for a letter recogniser, whose WER can "
             "sit near 100 %% for every system)",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    try:
        make_results(
            args.out,
            args.exp_dir,
            test_sets=[(n, p) for n, p in args.test_set] if args.test_set else None,
            configs=args.configs,
            stage_times=args.stage_times,
            images=args.images,
            tensorboard_dirs=args.tensorboard,
            title=args.title,
            notes=args.notes,
            embed=[e for e in args.embed.split(",") if e],
            environment=args.environment,
            rank_by=args.rank_by,
        )
    except (OSError, ValueError, KeyError) as e:
        logger.error("cannot write %s: %s", args.out, e)
        return 1
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
