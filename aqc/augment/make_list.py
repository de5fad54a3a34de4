"""Writing the noise and RIR lists that the augmentation reads (``utils/make_noise_list.py``, stage 2).

A list directory holds ``wav.scp`` (``<id> <absolute path>``) and ``utt2dur`` (``<id> <seconds>``),
both sorted by id. Files already at the target rate and mono are listed where they are; others get a
converted copy under ``<out_dir>/converted/`` (reused while newer than its source), so training never
resamples.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import soundfile as sf

AUDIO_SUFFIXES = (".wav", ".flac")
CHANNEL_MODES = ("mix", "first")
log = logging.getLogger("aqc.augment.make_list")


class ListError(RuntimeError):
    """The list cannot be made (wrong root, nothing usable); the message says why."""


@dataclass(frozen=True)
class ListedFile:
    key: str
    path: Path
    num_frames: int


@dataclass
class ListSummary:
    listed: int = 0
    converted: int = 0
    skipped: int = 0


def find_audio_files(root: Path, subsets: Sequence[str]) -> List[Path]:
    """Audio files under each ``root/subset``, recursively, sorted; a missing subset is an error."""
    root = Path(root)
    if not root.is_dir():
        raise ListError(f"audio root {str(root)!r} is not a directory; pass the folder that holds "
                        f"{', '.join(subsets)}")
    files: List[Path] = []
    for subset in subsets:
        folder = root / subset
        if not folder.is_dir():
            present = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*") if p.is_dir())
            raise ListError(f"subset {subset!r} not found: {str(folder)!r} is not a directory "
                            f"(sub-folders present: {present or 'none'})")
        files.extend(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    return sorted(set(files))


def make_keys(relative_paths: Iterable[Path]) -> Dict[Path, str]:
    """Ids from relative paths (``noise/free-sound/x.wav`` -> ``noise-free-sound-x``), unique.

    Separators become ``-`` and whitespace ``_`` so an id is one Kaldi token; the rare clash (``a.wav``
    next to ``a.flac``) gets ``-2``, ``-3``, ... in path order.
    """
    keys: Dict[Path, str] = {}
    used: Dict[str, int] = {}
    for rel in sorted(relative_paths):
        base = re.sub(r"\s+", "_", rel.with_suffix("").as_posix().replace("/", "-"))
        used[base] = used.get(base, 0) + 1
        keys[rel] = base if used[base] == 1 else f"{base}-{used[base]}"
    return keys


def _to_mono(data: np.ndarray, channel: str) -> np.ndarray:
    return data[:, 0] if channel == "first" else data.mean(axis=1)


def _resample(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return mono
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), rate, target).numpy()


def convert(source: Path, target: Path, sample_rate: int, channel: str) -> int:
    """Write ``source`` as a mono float wav at ``sample_rate``; returns its frame count."""
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        info = sf.info(str(target))
        if info.samplerate == sample_rate and info.channels == 1 and info.frames > 0:
            return info.frames
    data, rate = sf.read(str(source), dtype="float32", always_2d=True)
    mono = _resample(_to_mono(data, channel), rate, sample_rate)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp.wav")
    sf.write(str(tmp), mono, sample_rate, subtype="FLOAT")  # float: no clipping, RIR tails keep precision
    os.replace(tmp, target)
    return int(mono.shape[0])


def list_file(source: Path, key: str, rel: Path, out_dir: Path, sample_rate: int,
              channel: str) -> Tuple[ListedFile, bool]:
    """The entry for one file (converting it when needed) and whether it was converted.

    Raises ``sf.SoundFileError``/``RuntimeError``/``ValueError`` for an unreadable file.
    """
    info = sf.info(str(source))
    if info.frames <= 0:
        raise ValueError("no samples")
    if info.samplerate == sample_rate and info.channels == 1:
        return ListedFile(key, source.resolve(), int(info.frames)), False
    target = (out_dir / "converted" / rel).with_suffix(".wav")
    return ListedFile(key, target.resolve(), convert(source, target, sample_rate, channel)), True


def write_list(out_dir: Path, entries: Sequence[ListedFile], sample_rate: int) -> None:
    """``wav.scp`` and ``utt2dur`` sorted by id, each written atomically."""
    entries = sorted(entries, key=lambda e: e.key)
    _write_lines(out_dir / "wav.scp", (f"{e.key} {e.path}" for e in entries))
    _write_lines(out_dir / "utt2dur", (f"{e.key} {round(e.num_frames / sample_rate, 6)}" for e in entries))


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
    os.replace(tmp, path)


def make_audio_list(root: Path, subsets: Sequence[str], out_dir: Path, sample_rate: int = 16000,
                    channel: str = "mix", what: str = "noise") -> ListSummary:
    """Scan ``root/<subset>`` for audio, convert where needed, write the list; unreadable files are skipped."""
    if channel not in CHANNEL_MODES:
        raise ValueError(f"channel must be one of {CHANNEL_MODES}, got {channel!r}")
    root, out_dir = Path(root), Path(out_dir)
    sources = find_audio_files(root, subsets)
    keys = make_keys(p.relative_to(root) for p in sources)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, entries = ListSummary(), []
    for source in sources:
        rel = source.relative_to(root)
        try:
            entry, converted = list_file(source, keys[rel], rel, out_dir, sample_rate, channel)
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            log.warning("skipping unreadable %s file %s: %s", what, source, e)
            summary.skipped += 1
            continue
        entries.append(entry)
        summary.converted += int(converted)
    if not entries:
        raise ListError(f"no readable {what} audio ({'/'.join(AUDIO_SUFFIXES)}) under "
                        f"{', '.join(str(root / s) for s in subsets)} ({summary.skipped} unreadable)")
    write_list(out_dir, entries, sample_rate)
    summary.listed = len(entries)
    if summary.skipped:
        log.warning("skipped %d unreadable %s file(s) of %d", summary.skipped, what, len(sources))
    return summary
