#!/usr/bin/env python3
"""Score a hypothesis text file against a reference: WER, CER, alignments (Kaldi-free).

    python -m aqc.bin.score --ref data/test/text --hyp exp/decode/text --out_dir exp/decode/score

Writes ``wer.txt`` and ``cer.txt`` (Kaldi ``compute-wer`` style), ``alignments.txt`` (words) and
``alignments_char.txt`` (REF/HYP/EVAL lines, ``***`` for gaps, per-utterance counts) and ``scores.json``.
See :mod:`aqc.scoring` for the conventions (CER excludes spaces; empty references; missing hypotheses).
By default a reference utterance without a hypothesis is scored as all deletions (and listed);
``--require_all true`` makes it an error instead, as the recipes do.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from espnet2.utils.types import str2bool

from aqc.scoring import Normalization, SetScore, format_rate, score_files, write_reports, write_trn

logger = logging.getLogger("aqc.bin.score")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Compute WER and CER of Kaldi-style text files (<utt-id> <transcript> per line).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--ref", required=True, help="Reference text file, e.g. data/test/text")
    parser.add_argument("--hyp", required=True, help="Hypothesis text file, e.g. exp/decode/text")
    parser.add_argument("--out_dir", required=True, help="Where to write wer.txt, cer.txt, alignments, scores.json")
    parser.add_argument("--upper", type=str2bool, default=False, help="Upper-case both texts before scoring")
    parser.add_argument(
        "--remove_punct", type=str2bool, default=False,
        help="Remove Unicode punctuation (apostrophes inside words are kept) before scoring",
    )
    parser.add_argument(
        "--nfc", type=str2bool, default=True,
        help="NFC-normalise both texts (merges canonically equivalent encodings such as u+U+0308 and ü)",
    )
    parser.add_argument(
        "--use_sclite", type=str2bool, default=False,
        help="Also run sclite (if on PATH) into <out_dir>/sclite for a cross-check; our numbers are still written",
    )
    parser.add_argument(
        "--require_all", type=str2bool, default=False,
        help="Every reference utterance must have a hypothesis: a missing one is an error (exit 1) naming it, "
        "instead of being scored as all deletions (the recipes use true: a decoder that skipped an utterance "
        "must not pass unnoticed)",
    )
    parser.add_argument("--log_level", default="INFO", choices=["ERROR", "WARNING", "INFO", "DEBUG"])
    return parser


def run_sclite(result: SetScore, out_dir: Path) -> Optional[Path]:
    """Run sclite on the normalised texts; returns its report dir, or None when sclite is missing."""
    sclite = shutil.which("sclite")
    if sclite is None:
        logger.warning("--use_sclite true, but sclite is not on PATH: using aqc's own scoring only")
        return None
    sdir = out_dir / "sclite"
    sdir.mkdir(parents=True, exist_ok=True)
    write_trn(((u.utt, u.ref) for u in result.utts), sdir / "ref.trn")
    write_trn(((u.utt, u.hyp) for u in result.utts), sdir / "hyp.trn")
    cmd = [sclite, "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm", "-o", "all", "-O", "."]
    proc = subprocess.run(cmd, cwd=sdir, capture_output=True, text=True)
    if proc.returncode != 0:
        logger.warning("sclite failed (exit %d): %s", proc.returncode, proc.stderr.strip()[-500:])
        return None
    return sdir


def main(argv: Optional[List[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s")
    norm = Normalization(upper=args.upper, remove_punct=args.remove_punct, nfc=args.nfc)
    try:
        result = score_files(args.ref, args.hyp, norm)
    except (ValueError, OSError) as e:
        logger.error("%s", e)
        return 1
    out_dir = Path(args.out_dir)
    if args.require_all and result.missing:
        shown = ", ".join(result.missing[:20])
        if len(result.missing) > 20:
            shown += f", ... ({len(result.missing)} in all)"
        logger.error(
            "%s: %d of %d reference utterances of %s have no hypothesis: %s. Fix: decode every utterance of the set "
            "(the decoder's key list must be the reference's), or score with --require_all false to count them as "
            "all deletions", args.hyp, len(result.missing), result.num_utts, args.ref, shown,
        )
        return 1
    write_reports(result, out_dir, args.ref, args.hyp)
    if result.missing:
        logger.warning(
            "%d of %d reference utterances have no hypothesis (scored as all deletions), e.g. %s; "
            "see %s/scores.json 'missing_utts'",
            len(result.missing), result.num_utts, ", ".join(result.missing[:5]), out_dir,
        )
    if args.use_sclite:
        sdir = run_sclite(result, out_dir)
        if sdir is not None:
            logger.info("sclite reports in %s", sdir)
    w, c = result.word, result.char
    logger.info(
        "%s: %%WER %s [ %d / %d ], %%CER %s [ %d / %d ], %d utts -> %s",
        args.hyp, format_rate(w.rate), w.errors, w.ref_len, format_rate(c.rate), c.errors, c.ref_len,
        result.num_utts, out_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
