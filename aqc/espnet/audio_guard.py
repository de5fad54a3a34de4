"""Which audio may reach the model, and what happens to the rest (training and validation lists).

``utils/validate_data_dir.py`` reports every problem of a data dir at once (decoding every file). The
trainer applies these rules to ``--train/valid_data_path_and_name_and_type ...,sound`` lists:

    =============================================  ===============================================
    missing file                                   rejected before training (pre-flight)
    unreadable header / not audio / 0-byte file    rejected before training (pre-flight)
    zero samples                                   rejected before training (pre-flight)
    sample rate other than ``sample_rate``         ``resample: false``: rejected before training
                                                   (pre-flight); ``resample: true``: resampled
    stereo / multi-channel                         down-mixed (channel mean)
    shorter than ``min_sample_size`` (at least     dropped in the collate, counted per epoch
    two CNN frames: receptive field + one stride)
    shorter than one mask span                     trains; the span is clipped to the utterance
    decoding fails after a good header (damaged    skipped when read, counted per epoch, the file
    data, or a file gone since the pre-flight)     named in a WARNING
    NaN or Inf samples                             skipped when read, counted, named
    all-silent (constant, e.g. all zeros)          skipped when read, counted, named
    augmented view with NaN/Inf (bad noise file)   utterance dropped, counted, named
    =============================================  ===============================================

The pre-flight (:func:`aqc.espnet.preflight.preflight_audio`, ``--check_audio true``, the default) reads
every listed file's header (a stat and a few bytes each, threaded) and stops with one message listing
every rejected file (the first 20, then a count). NaN/Inf and silence need every sample, so they are
checked when a file is read (:class:`AudioGuard`); such audio never reaches the model (normalising
silence would divide by zero). ``--check_audio false`` skips the pre-flight: then missing and
unreadable files are skipped and counted when read, like damaged ones. An epoch in which no batch is
left stops the run with the counts.

Fine-tuning and decoding are stricter, because what they read is scored: their pre-flight rejects the
same files before anything starts, and decoding also reads every sample first, so NaN/Inf audio stops
it with the file's name instead of decoding to an empty hypothesis.
"""
from __future__ import annotations

import collections.abc
import logging
import os
from typing import Optional

import numpy as np

from aqc.cli import AQCUserError

logger = logging.getLogger(__name__)

BAD_AUDIO_SHAPE = (0, 0)


class BadAudioError(AQCUserError):
    """Audio files that cannot be used, found before training or decoding."""


class SampleRateError(ValueError):
    """Audio at a rate other than the model's, with resampling off."""


def bad_audio_marker() -> np.ndarray:
    """What :class:`AudioGuard` returns for audio that must not be used: a (0, 0) float32 array (real
    audio of 0 frames is ``(0,)`` or ``(0, channels)``); the collate drops and counts it."""
    return np.zeros(BAD_AUDIO_SHAPE, dtype=np.float32)


def is_bad_audio(array: np.ndarray) -> bool:
    return isinstance(array, np.ndarray) and array.shape == BAD_AUDIO_SHAPE


def audio_problem(array: np.ndarray) -> Optional[str]:
    """Why a decoded waveform must not reach the model (NaN/Inf, all-silent), or None."""
    if array.size == 0:
        return None  # zero length: the collate's length rule drops it
    finite = np.isfinite(array)
    if not finite.all():
        return f"{int(array.size - np.count_nonzero(finite))} NaN/Inf sample(s)"
    if float(np.max(array)) - float(np.min(array)) <= 0.0:
        return "all-silent (every sample is the same value)"
    return None


def read_failure(path: Optional[str], exc: BaseException) -> str:
    """Why a file could not be read, in words: soundfile reports a missing file as "System error"."""
    from aqc.checkpoints import short_error

    if path is not None and not os.path.exists(path):
        return "does not exist"
    return f"cannot be read as audio ({type(exc).__name__}: {short_error(exc)})"


class AudioGuard(collections.abc.Mapping):
    """Wraps a sound loader (a :class:`aqc.espnet.collate.SampleRateGuard`): unreadable, NaN/Inf and
    all-silent audio becomes :func:`bad_audio_marker` with a WARNING naming the file (once per process).
    A sample-rate rejection (:class:`SampleRateError`) still stops the run."""

    def __init__(self, inner):
        self.inner = inner
        self._warned: set = set()

    def keys(self):
        return self.inner.keys()

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        return iter(self.inner)

    def _path(self, key: str) -> Optional[str]:
        path_of = getattr(self.inner, "_path", None)
        return path_of(key) if path_of is not None else None

    def _skip(self, key: str, reason: str) -> np.ndarray:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(f"skipping {self._path(key) or 'utterance ' + key} (id {key}): {reason}")
        return bad_audio_marker()

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            array = self.inner[key]
        except SampleRateError:
            raise
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types
            return self._skip(key, read_failure(self._path(key), exc))
        problem = audio_problem(np.asarray(array))
        if problem is not None:
            return self._skip(key, problem)
        return array
