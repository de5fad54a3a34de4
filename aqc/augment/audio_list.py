"""Kaldi-style lists of noise or RIR files, and reading from them without sox.

A list is read once at construction; files are opened only when a sample needs them (so the object
pickles into DataLoader workers without open handles), and a long file is read as one seeked segment.
A file whose sample rate differs from the configured one is resampled with
``torchaudio.functional.resample`` (``utils/make_*_list.py`` convert ahead of time, so this is the
rare path).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, NoReturn, Optional, Tuple

import numpy as np
import soundfile as sf


class AudioFileError(RuntimeError):
    """A listed noise or RIR file cannot be used (corrupt, empty, unreadable)."""


@dataclass(frozen=True)
class AudioEntry:
    key: str
    path: str


def read_scp(path: str) -> List[Tuple[str, str]]:
    """``<id> <path>`` lines (the path may contain spaces); blank lines are skipped."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected '<id> <path>', got {line!r}")
            pairs.append((fields[0], fields[1]))
    return pairs


def read_utt2dur(path: str) -> Dict[str, float]:
    """``<id> <seconds>`` lines."""
    durations = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{number}: expected '<id> <seconds>', got {line.strip()!r}")
            durations[fields[0]] = float(fields[1])
    return durations


class AudioList:
    """The files of one list, and seeded reading from them.

    Args:
        scp: the ``<id> <path>`` list; relative paths are taken from the current directory.
        sample_rate: the rate every read returns.
        what: ``noise`` or ``RIR``, for messages.
        remedy: what to tell the user when a file is bad (which script regenerates the list).
        utt2dur: optional ``<id> <seconds>`` file; needed only for ``min_duration``.
        min_duration: entries shorter than this (seconds) are dropped at construction.
    """

    def __init__(self, scp: str, sample_rate: int, what: str = "noise",
                 remedy: str = "regenerate the list with utils/make_noise_list.py",
                 utt2dur: Optional[str] = None, min_duration: float = 0.0):
        self.scp = scp
        self.sample_rate = int(sample_rate)
        self.what = what
        self.remedy = remedy
        if not os.path.isfile(scp):
            raise FileNotFoundError(f"{what} list {scp!r} not found; {remedy}")
        pairs = read_scp(scp)
        if utt2dur is not None or min_duration > 0.0:
            pairs = self._drop_short(pairs, utt2dur, min_duration)
        if not pairs:
            raise ValueError(f"{what} list {scp!r} has no usable entries; {remedy}")
        self.entries = [AudioEntry(key, os.path.abspath(path)) for key, path in pairs]
        for entry in self.entries:  # a stat each: cheap, and it fails before training starts
            if not os.path.isfile(entry.path):
                self._fail(entry, "does not exist", FileNotFoundError)

    def __len__(self) -> int:
        return len(self.entries)

    def choose(self, rng: np.random.Generator) -> AudioEntry:
        return self.entries[int(rng.integers(len(self.entries)))]

    def read_segment(self, entry: AudioEntry, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """A mono float32 segment of ``num_frames`` at a random start, or the whole file if shorter."""
        with self._open(entry) as f:
            source_frames = self._required_frames(num_frames, f.samplerate)
            start = int(rng.integers(f.frames - source_frames + 1)) if f.frames > source_frames else 0
            f.seek(start)
            data = self._read(entry, f, source_frames)
        return self._to_rate(data.mean(axis=1), f.samplerate)[:num_frames]

    def read_whole(self, entry: AudioEntry, channel: str = "mix") -> np.ndarray:
        """The whole file as mono float32: channels averaged (``mix``) or the first one (``first``)."""
        with self._open(entry) as f:
            data = self._read(entry, f, f.frames)
        mono = data[:, 0] if channel == "first" else data.mean(axis=1)
        return self._to_rate(mono, f.samplerate)

    def _open(self, entry: AudioEntry) -> sf.SoundFile:
        if not os.path.isfile(entry.path):
            self._fail(entry, "does not exist", FileNotFoundError)
        try:
            f = sf.SoundFile(entry.path)
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            self._fail(entry, f"cannot be read as audio ({e})")
        if f.frames <= 0:
            f.close()
            self._fail(entry, "has no samples")
        return f

    def _read(self, entry: AudioEntry, f: sf.SoundFile, frames: int) -> np.ndarray:
        try:
            data = f.read(frames, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError, ValueError) as e:
            self._fail(entry, f"cannot be decoded ({e})")
        if data.shape[0] == 0:
            self._fail(entry, "has no decodable samples")
        return data

    def _required_frames(self, num_frames: int, file_rate: int) -> int:
        # one extra source frame so that rounding in the resampler never leaves us short
        if file_rate == self.sample_rate:
            return num_frames
        return int(np.ceil(num_frames * file_rate / self.sample_rate)) + 1

    def _to_rate(self, mono: np.ndarray, file_rate: int) -> np.ndarray:
        if file_rate == self.sample_rate:
            return np.ascontiguousarray(mono, dtype=np.float32)
        import torch
        import torchaudio.functional as AF

        resampled = AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), file_rate, self.sample_rate)
        return resampled.numpy().astype(np.float32, copy=False)

    def _drop_short(self, pairs: List[Tuple[str, str]], utt2dur: Optional[str],
                    min_duration: float) -> List[Tuple[str, str]]:
        if utt2dur:
            durations = read_utt2dur(utt2dur)
        else:  # no durations file: read each header once, here
            durations = {key: self._header_duration(AudioEntry(key, os.path.abspath(path))) for key, path in pairs}
        missing = [key for key, _ in pairs if key not in durations]
        if missing:
            raise ValueError(f"{self.what} durations {utt2dur!r} lack {len(missing)} id(s) of {self.scp!r} "
                             f"(first: {missing[0]}); {self.remedy}")
        # zero-length entries stay when min_duration is 0, so reading them names the bad file
        return [(key, path) for key, path in pairs if durations[key] >= min_duration]

    def _header_duration(self, entry: AudioEntry) -> float:
        with self._open(entry) as f:
            return f.frames / f.samplerate

    def _fail(self, entry: AudioEntry, problem: str, error: type = AudioFileError) -> NoReturn:
        raise error(f"{self.what} file {entry.path!r} (id {entry.key} in {self.scp!r}) {problem}; "
                    f"remove it or {self.remedy}")

