#!/usr/bin/env python3
"""Pool folders of unlabelled audio with a data directory, for pre-training only.

    utils/pool_unlabelled.py --data_dir data/train_pretrain --out_dir data/train_pretrain_pooled \\
        --audio_dir /corpora/LibriSpeech/train-clean-100 [--audio_dir DIR ...]

The output holds ``wav.scp``, ``utt2spk`` and ``spk2utt``: every utterance of ``--data_dir`` unchanged, and
one utterance per ``.wav``/``.flac`` file found below each ``--audio_dir`` (recursively). A pooled file's
speaker is ``extra<k>-<its first folder below the audio dir>`` (LibriSpeech's speaker folders stay
speakers) and its utterance id ``<speaker>-<path below that folder, '/' as '-'>``. Transcripts are not
copied: the pool is for pre-training. A data dir with ``segments`` cannot be pooled (whole files only).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from utt2spk_to_spk2utt import format_spk2utt, read_utt2spk
from validate_data_dir import c_key, spk2utt_from_utt2spk

AUDIO_SUFFIXES = (".wav", ".flac")


def read_wav_scp(path: Path) -> Dict[str, str]:
    table: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{lineno}: expected '<utt> <audio>', got {line.strip()!r}")
            table[parts[0]] = parts[1]
    return table


def _id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def audio_entries(audio_dir: Path, index: int) -> List[Tuple[str, str, str]]:
    """(utterance, speaker, absolute path) for every audio file below ``audio_dir``."""
    files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"--audio_dir {audio_dir}: no .wav or .flac files below it")
    entries = []
    for p in files:
        rel = p.relative_to(audio_dir)
        top = _id(rel.parts[0]) if len(rel.parts) > 1 else "top"
        spk = f"extra{index}-{top}"
        rest = rel.parts[1:] if len(rel.parts) > 1 else rel.parts
        utt = f"{spk}-{_id('-'.join(rest[:-1] + (Path(rest[-1]).stem,)))}"
        entries.append((utt, spk, str(p.resolve())))
    return entries


def pool(data_dir: Path, audio_dirs: Sequence[Path], out_dir: Path) -> Dict[str, int]:
    if (data_dir / "segments").is_file():
        raise ValueError(f"{data_dir}/segments: a segmented data dir cannot be pooled with whole files; "
                         "pool the audio into the corpus's own preparation instead")
    wav = read_wav_scp(data_dir / "wav.scp")
    with open(data_dir / "utt2spk", encoding="utf-8") as f:
        utt2spk = read_utt2spk(f, str(data_dir / "utt2spk"))
    counts = {"base": len(wav)}
    for k, audio_dir in enumerate(audio_dirs):
        added = 0
        for utt, spk, path in audio_entries(audio_dir, k):
            if utt in wav:
                raise ValueError(f"{path}: its utterance id {utt} is already in the pool "
                                 f"({wav[utt]}); rename one of the files")
            wav[utt], utt2spk[utt] = path, spk
            added += 1
        counts[str(audio_dir)] = added
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("text", "segments", "utt2num_samples"):
        (out_dir / stale).unlink(missing_ok=True)
    keys = sorted(wav, key=c_key)
    (out_dir / "wav.scp").write_text("".join(f"{u} {wav[u]}\n" for u in keys), encoding="utf-8")
    (out_dir / "utt2spk").write_text("".join(f"{u} {utt2spk[u]}\n" for u in keys), encoding="utf-8")
    (out_dir / "spk2utt").write_text(format_spk2utt(spk2utt_from_utt2spk({u: utt2spk[u] for u in keys})),
                                     encoding="utf-8")
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="the pre-training set (wav.scp, utt2spk)")
    parser.add_argument("--audio_dir", type=Path, nargs="+", action="extend", required=True,
                        help="folders of more unlabelled audio")
    parser.add_argument("--out_dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        counts = pool(args.data_dir, args.audio_dir, args.out_dir)
    except (OSError, ValueError) as e:
        print(f"pool_unlabelled: {e}", file=sys.stderr)
        return 1
    added = ", ".join(f"{n} from {d}" for d, n in counts.items() if d != "base")
    print(f"pool_unlabelled: {args.out_dir}: {counts['base']} utterances of {args.data_dir} and {added}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
