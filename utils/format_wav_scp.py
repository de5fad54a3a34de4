#!/usr/bin/env python3
"""Write a 16 kHz mono copy of a data directory's audio, with utt2num_samples, filtered by duration.

    utils/format_wav_scp.py --in_dir data/train --out_dir dump/raw/train \
        [--sample_rate 16000] [--min_duration 0.1] [--max_duration 30] [--nj 2]
    utils/format_wav_scp.py --in_dir data/test --out_dir dump/raw/test --require_all true

Audio already at the target rate and mono is referenced in place (no copy); other audio is down-mixed
and resampled into <out_dir>/wav/. The other Kaldi files (text, utt2spk, spk2utt) are copied for the
utterances kept.

A training set (the default) is filtered: unreadable, missing, empty or non-finite audio, and audio
outside --min_duration/--max_duration or shorter than --min_samples, is skipped with its reason listed
in <out_dir>/skipped.txt and counted on stderr; the command fails if nothing is left.

A set that is scored or validated on is used in full (``--require_all true``): no duration filter, and
any utterance that cannot be used (unreadable, missing, empty, non-finite, fewer than --min_samples
samples) stops the command with one message listing them and the fix, so that no test utterance
vanishes before scoring.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import soundfile as sf

from aqc.augment.audio_list import read_scp


def convert(job: Tuple[str, str, str, int]) -> Tuple[str, Optional[str], int, str]:
    """Returns (utt, path to use, num_samples, reason if skipped)."""
    utt, src, wav_dir, rate = job
    if src.endswith("|"):
        return utt, None, 0, "pipes in wav.scp are not supported; write the audio to files"
    if not os.path.isfile(src):
        return utt, None, 0, "does not exist"
    try:
        info = sf.info(src)
        if info.frames == 0:
            return utt, None, 0, "empty audio (0 samples)"
        if info.samplerate == rate and info.channels == 1:
            audio, _ = sf.read(src, dtype="float32", frames=info.frames)
            if not np.isfinite(audio).all():
                return utt, None, 0, "NaN or Inf samples"
            return utt, src, info.frames, ""
        audio, sr = sf.read(src, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises several types for corrupt files
        return utt, None, 0, f"unreadable ({type(exc).__name__}: {exc})"
    audio = audio.mean(axis=1)
    if not np.isfinite(audio).all():
        return utt, None, 0, "NaN or Inf samples"
    if sr != rate:
        import torch
        import torchaudio.functional as AF

        torch.set_num_threads(1)
        audio = AF.resample(torch.from_numpy(audio), sr, rate).numpy()
    out = Path(wav_dir) / f"{utt}.wav"
    sf.write(out, audio, rate, subtype="FLOAT")
    return utt, str(out), len(audio), ""


def str2bool(value: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def unusable_message(in_dir: Path, skipped, sources, total: int, show: int = 20) -> str:
    """Every unusable utterance of a set that must stay complete, and what to do (first ``show`` listed)."""
    lines = [f"format_wav_scp: {in_dir}: {len(skipped)} of {total} utterances cannot be used, and this set is "
             f"scored or validated on in full (no utterance may be dropped):"]
    lines += [f"  {utt} {sources.get(utt, '?')}: {reason}" for utt, reason in sorted(skipped)[:show]]
    if len(skipped) > show:
        lines.append(f"  ... and {len(skipped) - show} more")
    lines.append(f"Fix: repair the audio; or, if an utterance is not meant to be scored, delete its line from "
                 f"{in_dir / 'wav.scp'} and run utils/fix_data_dir.py {in_dir}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--in_dir", required=True, type=Path)
    parser.add_argument("--out_dir", required=True, type=Path)
    parser.add_argument("--sample_rate", type=int, default=16000)
    parser.add_argument("--min_duration", type=float, default=0.0, help="seconds; shorter is dropped")
    parser.add_argument("--max_duration", type=float, default=float("inf"), help="seconds; longer is dropped")
    parser.add_argument("--min_samples", type=int, default=400,
                        help="fewer samples (at --sample_rate) than the model's CNN receptive field: unusable")
    parser.add_argument("--require_all", type=str2bool, default=False,
                        help="a scored/validation set: no duration filter, every utterance must be usable")
    parser.add_argument("--nj", type=int, default=1)
    args = parser.parse_args(argv)

    scp = args.in_dir / "wav.scp"
    if not scp.is_file():
        raise SystemExit(f"format_wav_scp: {scp} not found; run data preparation (stage 1) first")
    try:
        entries = read_scp(str(scp))
    except ValueError as exc:
        raise SystemExit(f"format_wav_scp: {exc}") from None
    wav_dir = args.out_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(utt, path, str(wav_dir), args.sample_rate) for utt, path in entries]
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    with ProcessPoolExecutor(max_workers=max(1, args.nj)) as pool:
        results = list(tqdm(pool.map(convert, jobs, chunksize=16), total=len(jobs), desc=f"format {args.in_dir}",
                            disable=len(jobs) < 200, file=sys.stderr))

    kept, skipped = [], []
    min_samples = args.min_duration * args.sample_rate
    max_samples = args.max_duration * args.sample_rate
    sources = dict(entries)
    for utt, path, n, reason in results:
        if path is None:
            skipped.append((utt, reason))
        elif n < args.min_samples:
            skipped.append((utt, f"{n} samples at {args.sample_rate} Hz, fewer than the model's minimum "
                                 f"{args.min_samples}"))
        elif args.require_all:
            kept.append((utt, path, n))
        elif n < min_samples:
            skipped.append((utt, f"shorter than --min_duration {args.min_duration}s ({n} samples)"))
        elif n > max_samples:
            skipped.append((utt, f"longer than --max_duration {args.max_duration}s ({n} samples)"))
        else:
            kept.append((utt, path, n))
    if args.require_all and skipped:
        raise SystemExit(unusable_message(args.in_dir, skipped, sources, len(entries)))
    kept.sort()
    with open(args.out_dir / "wav.scp", "w", encoding="utf-8") as f:
        f.writelines(f"{u} {p}\n" for u, p, _ in kept)
    with open(args.out_dir / "utt2num_samples", "w", encoding="utf-8") as f:
        f.writelines(f"{u} {n}\n" for u, _, n in kept)
    with open(args.out_dir / "skipped.txt", "w", encoding="utf-8") as f:
        f.writelines(f"{u} {r}\n" for u, r in skipped)
    keep_ids = {u for u, _, _ in kept}
    for name in ("text", "utt2spk"):
        src = args.in_dir / name
        if src.is_file():
            with open(src, encoding="utf-8") as fin, open(args.out_dir / name, "w", encoding="utf-8") as fout:
                fout.writelines(line for line in fin if line.strip() and line.split(maxsplit=1)[0] in keep_ids)
    if (args.out_dir / "utt2spk").is_file():
        spk2utt: dict[str, list[str]] = {}
        for line in open(args.out_dir / "utt2spk", encoding="utf-8"):
            utt, spk = line.split()
            spk2utt.setdefault(spk, []).append(utt)
        with open(args.out_dir / "spk2utt", "w", encoding="utf-8") as f:
            f.writelines(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items()))
    if skipped:
        print(f"format_wav_scp: skipped {len(skipped)} of {len(entries)} utterances; reasons in "
              f"{args.out_dir / 'skipped.txt'}", file=sys.stderr)
    if not kept:
        raise SystemExit(f"format_wav_scp: no usable audio left in {args.in_dir}; see {args.out_dir / 'skipped.txt'}")
    print(f"format_wav_scp: {len(kept)} utterances, {sum(n for *_, n in kept) / args.sample_rate / 3600:.3f} h "
          f"-> {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
