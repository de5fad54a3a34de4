#!/usr/bin/env python3
"""Write ``utt2num_samples`` (``<utt> <number of samples>``) from a data directory's wav.scp.

    utils/get_utt2num_samples.py [--nj 4] [--sample_rate 16000] data/train

Lengths come from the file headers (``soundfile.info``), so nothing is decoded. By default they are
counted at each file's own rate; ``--sample_rate N`` counts them at N Hz instead (what the model sees
after the format stage resamples; ``ceil(frames * N / rate)``). With ``segments``, each segment's length
is counted (end -1: to the end of the recording). If any file cannot be read, all of them are listed,
nothing is written, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from validate_data_dir import is_pipe, parse_segment, read_table, write_table

Header = Tuple[Optional[int], Optional[int], Optional[str]]  # frames, rate, error


def header(path: str) -> Header:
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises several types
        return None, None, f"{type(e).__name__}: {e}"
    return info.frames, info.samplerate, None


def read_headers(paths: List[str], nj: int) -> List[Header]:
    from tqdm import tqdm

    bar = dict(total=len(paths), desc="headers", unit="file", disable=len(paths) < 200, file=sys.stderr)
    if nj <= 1 or len(paths) < 2:
        return [header(p) for p in tqdm(paths, **bar)]
    with multiprocessing.Pool(min(nj, len(paths))) as pool:
        return list(tqdm(pool.imap(header, paths, chunksize=16), **bar))


def count(frames: int, rate: int, target: Optional[int]) -> int:
    return frames if not target or target == rate else int(math.ceil(frames * target / rate))


def utt2num_samples(data_dir: Path, nj: int = 1, target: Optional[int] = None) -> Tuple[Dict[str, str], List[str]]:
    """``(utt -> samples, problems)``; problems name the file, the key and the fix."""
    wav_path = data_dir / "wav.scp"
    wav = read_table(wav_path)
    problems = [
        f"{wav_path}: {rec}: {value!r} is a pipe; write the audio to a file and put its path in wav.scp"
        for rec, value in wav.items() if is_pipe(value)
    ]
    recs = [r for r in wav if not is_pipe(wav[r])]
    headers = dict(zip(recs, read_headers([wav[r] for r in recs], nj)))
    for rec, (_, _, err) in headers.items():
        if err is not None:
            problems.append(f"{wav_path}: {rec}: cannot read {wav[rec]!r} ({err}); fix the path or remove the entry "
                            f"(utils/validate_data_dir.py {data_dir} lists every problem)")
    result: Dict[str, str] = {}
    seg_path = data_dir / "segments"
    if not seg_path.is_file():
        for rec, (frames, rate, err) in headers.items():
            if err is None:
                result[rec] = str(count(frames, rate, target))
        return result, problems
    for utt, value in read_table(seg_path).items():
        seg = parse_segment(value)
        if seg is None or seg[0] not in wav:
            problems.append(f"{seg_path}: {utt}: malformed line or unknown recording; run utils/fix_data_dir.py")
            continue
        frames, rate, err = headers.get(seg[0], (None, None, "pipe"))
        if err is not None:
            continue
        start = int(round(seg[1] * rate))
        end = frames if seg[2] == -1 else min(frames, int(round(seg[2] * rate)))
        result[utt] = str(count(max(0, end - start), rate, target))
    return result, problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write <data_dir>/utt2num_samples from wav.scp (and segments) using soundfile.info.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("data_dir", type=Path, help="Data directory, e.g. data/train")
    parser.add_argument("--nj", type=int, default=1, help="Worker processes reading headers")
    parser.add_argument("--sample_rate", type=int, default=0,
                        help="Count samples at this rate (0: each file's own rate)")
    parser.add_argument("--out", type=Path, default=None, help="Output file (default: <data_dir>/utt2num_samples)")
    args = parser.parse_args(argv)
    if not (args.data_dir / "wav.scp").is_file():
        print(f"get_utt2num_samples.py: {args.data_dir}/wav.scp not found", file=sys.stderr)
        return 1
    table, problems = utt2num_samples(args.data_dir, args.nj, args.sample_rate or None)
    if problems:
        for p in problems:
            print(f"ERROR {p}", file=sys.stderr)
        print(f"get_utt2num_samples.py: {len(problems)} problem(s); nothing written", file=sys.stderr)
        return 1
    out = args.out or args.data_dir / "utt2num_samples"
    write_table(out, table)
    print(f"get_utt2num_samples.py: wrote {len(table)} lines to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
