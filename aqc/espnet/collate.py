"""Data pipeline of aqc's ESPnet SSL task: the two views of each utterance, built in data-loader workers.

:class:`AQCCollateFn` turns ESPnet's ``[(utt_id, {"speech": array}), ...]`` into one batch::

    speech          (B, L) float32  the clean view (the teacher's input), normalised
    speech_lengths  (B,)   int64    valid samples per row (all L unless ``pad: true``)
    speech_aug      (B, L) float32  the augmented view (the student's input), normalised;
                                    training split with an augmentation only
    speech_teacher  (B, L) float32  a second, independent augmentation (``teacher_view: augmented`` only)
    dropped_utterances (1,) int64   utterances of this batch dropped as too short (see below)
    bad_audio      (1,)   int64     utterances dropped as unusable audio (see below)

Per utterance, in this order (reference ``FileAudioDataset.__getitem__`` + ``RawAudioDataset.collater``):

0. Unusable audio: an utterance that :class:`aqc.espnet.audio_guard.AudioGuard` marked (unreadable,
   NaN/Inf, all-silent; the guard names the file in a WARNING) is dropped and counted in ``bad_audio``,
   and so is one whose augmented view is not finite (a bad noise or RIR file). Such audio never reaches
   the model; the rules are in :mod:`aqc.espnet.audio_guard`.
1. Down-mix: a multi-channel array ``(samples, channels)`` (ESPnet's layout) is averaged to mono.
2. Drop: utterances shorter than ``min_sample_size`` samples are dropped. The floor is what the model
   needs, two CNN frames (720 samples with the default CNN); a smaller ``min_sample_size`` is raised to
   it. The count travels with the batch and aqc's trainer logs it per epoch. A batch whose utterances
   are all dropped comes out empty (no utterance ids) and aqc's trainer skips it, on every rank
   independently; it is not an error.
3. Augment (training split only, never validation; ``augmentation_conf``, :mod:`aqc.augment`): the whole
   utterance, with this worker's generator.
4. Normalise each view on its own to zero mean, unit variance (``task.normalize: true``), over the whole
   utterance, before cropping (the reference normalises in ``__getitem__`` and crops in the collater).
5. Crop, the same random offset for every view of an utterance:
   ``pad: false`` (reference pre-training): every row is cropped to the batch's shortest utterance, and
   to ``max_sample_size``; no padding, all lengths equal.
   ``pad: true``: each row is cropped to ``max_sample_size`` only, shorter rows are zero-padded, and
   ``speech_lengths`` says how long each is (the model then masks padded frames).

Random numbers: one ``numpy.random.Generator`` per (seed, epoch, rank, data-loader worker, split), from
``numpy.random.SeedSequence``; aqc's trainer tells the collate object the epoch and rank before each epoch
(:meth:`AQCCollateFn.set_epoch`), so a run resumed at an epoch boundary draws the same crops and
augmentations as an uninterrupted one, and ranks/workers never share a stream.

Sample rate: ESPnet's sound readers drop the file's rate. :class:`SampleRateGuard` wraps them (aqc's
task installs it on the training/validation datasets) and applies the rule: audio at a rate other than
``sample_rate`` (16 kHz) is rejected with a message naming the file (:class:`SampleRateError`), unless
``resample: true``, which resamples it (band-limited sinc, ``torchaudio.functional.resample``) when it is
read. aqc's task checks every file's rate before training already (:mod:`aqc.espnet.preflight`).
"""
from __future__ import annotations

import collections.abc
import logging
import os
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from aqc.augment import build_augmentation as _build_augmentation
from aqc.augment import normalize

from .audio_guard import SampleRateError, is_bad_audio

logger = logging.getLogger(__name__)

def build_augmentation(conf: Optional[Mapping[str, Any]]):
    """``aqc.augment.build_augmentation(conf)``: None (no augmentation) or ``aug(wave, rng) -> wave``."""
    if not conf:
        return None
    return _build_augmentation(dict(conf))


def min_samples_for(conv_layers: Sequence[Sequence[int]], frames: int = 2) -> int:
    """Fewest samples giving ``frames`` CNN frames: receptive field + (frames - 1) x total stride."""
    receptive, jump = 1, 1
    for _, kernel, stride in conv_layers:
        receptive += (int(kernel) - 1) * jump
        jump *= int(stride)
    return receptive + (frames - 1) * jump


def downmix(wave: np.ndarray, utt_id: str = "?") -> np.ndarray:
    """Mono float32: ESPnet's ``(samples, channels)`` arrays are averaged over channels."""
    if wave.ndim == 2:
        wave = wave.mean(axis=1)
    elif wave.ndim != 1:
        raise ValueError(f"utterance {utt_id}: expected 1-D or (samples, channels) audio, got shape "
                         f"{tuple(wave.shape)}")
    return np.ascontiguousarray(wave, dtype=np.float32)


class AQCCollateFn:
    """Builds the clean and the augmented view of each utterance (see the module docstring).

    Args:
        train: the training split (augmentation on); False for validation (never augmented).
        seed: the run's ``--seed``.
        augmentation_conf: :mod:`aqc.augment` options; None or ``{}``: no augmentation.
        max_sample_size: random crop to at most this many samples (None: no limit).
        min_sample_size: drop shorter utterances (None: the model's minimum ``min_model_samples``).
        pad: False: crop every row to the shortest (reference); True: pad and return lengths.
        normalize: normalise each view (reference ``normalize: true``).
        teacher_view: ``clean`` or ``augmented`` (the model option; ``augmented`` adds ``speech_teacher``).
        min_model_samples: what the model needs (two CNN frames); from :func:`min_samples_for`.
    """

    def __init__(self, train: bool, seed: int = 0, augmentation_conf: Optional[Mapping[str, Any]] = None,
                 max_sample_size: Optional[int] = None, min_sample_size: Optional[int] = None,
                 pad: bool = False, normalize: bool = True, teacher_view: str = "clean",
                 min_model_samples: int = 720):
        if teacher_view not in ("clean", "augmented"):
            raise ValueError(f"teacher_view must be clean or augmented, not {teacher_view!r}")
        self.train = bool(train)
        self.seed = int(seed)
        self.augmentation = build_augmentation(augmentation_conf) if self.train else None
        self.max_sample_size = None if max_sample_size is None else int(max_sample_size)
        floor = int(min_model_samples)
        if min_sample_size is not None and int(min_sample_size) < floor:
            logger.warning("min_sample_size %d is below what the model needs (%d samples, two CNN frames): "
                           "using %d", int(min_sample_size), floor, floor)
        self.min_sample_size = max(floor, int(min_sample_size or 0))
        if self.max_sample_size is not None and self.max_sample_size < self.min_sample_size:
            raise ValueError(f"max_sample_size {self.max_sample_size} < min_sample_size {self.min_sample_size}")
        self.pad = bool(pad)
        self.normalize = bool(normalize)
        self.teacher_view = teacher_view
        self.epoch = 0
        self.rank = 0
        self._rng: Optional[np.random.Generator] = None
        self._rng_key: Optional[Tuple[int, int, int, int]] = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(train={self.train}, augmentation={self.augmentation is not None}, "
                f"max_sample_size={self.max_sample_size}, min_sample_size={self.min_sample_size}, "
                f"pad={self.pad}, normalize={self.normalize}, teacher_view={self.teacher_view})")

    # ------------------------------------------------------------------------------------ randomness
    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Called by aqc's trainer before each epoch's data loader starts its workers."""
        self.epoch = int(epoch)
        self.rank = int(rank)

    def generator(self) -> np.random.Generator:
        """This process's generator for the current epoch (workers: seeded on their first batch)."""
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else -1
        key = (self.epoch, self.rank, worker, os.getpid())
        if self._rng is None or self._rng_key != key:
            entropy = [self.seed % (2 ** 63), self.epoch, self.rank, worker + 1, 0 if self.train else 1]
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._rng_key = key
        return self._rng

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_rng"] = None
        state["_rng_key"] = None
        return state

    # -------------------------------------------------------------------------------------- collate
    def _views(self, wave: np.ndarray, rng: np.random.Generator) -> List[np.ndarray]:
        views = [wave]
        if self.augmentation is not None:
            views.append(np.asarray(self.augmentation(wave, rng), dtype=np.float32))
            if self.teacher_view == "augmented":
                views.append(np.asarray(self.augmentation(wave, rng), dtype=np.float32))
        for v in views[1:]:
            if v.shape != wave.shape:
                raise RuntimeError(f"augmentation changed the length: {wave.shape} -> {v.shape}")
        if self.normalize:
            views = [normalize(v) for v in views]
        return views

    def __call__(self, data: Collection[Tuple[str, Dict[str, np.ndarray]]]
                 ) -> Tuple[List[str], Dict[str, torch.Tensor]]:
        rng = self.generator()
        ids: List[str] = []
        waves: List[np.ndarray] = []
        dropped = bad = 0
        for utt_id, item in data:
            if "speech" not in item:
                raise KeyError(f"utterance {utt_id}: no 'speech' (give --train_data_path_and_name_and_type "
                               "wav.scp,speech,sound)")
            if is_bad_audio(np.asarray(item["speech"])):
                bad += 1
                continue
            wave = downmix(np.asarray(item["speech"]), utt_id)
            if wave.shape[0] < self.min_sample_size:
                dropped += 1
                continue
            ids.append(utt_id)
            waves.append(wave)

        views = []  # per utterance: [clean, aug?, teacher?]
        kept_ids, kept_waves = [], []
        for utt_id, wave in zip(ids, waves):
            utt_views = self._views(wave, rng)
            if not all(np.isfinite(v).all() for v in utt_views):
                bad += 1
                logger.warning("utterance %s: a view has NaN/Inf samples after augmentation (check the noise "
                               "and RIR lists); dropped", utt_id)
                continue
            views.append(utt_views)
            kept_ids.append(utt_id)
            kept_waves.append(wave)
        ids, waves = kept_ids, kept_waves
        dropped_t = torch.tensor([dropped], dtype=torch.long)
        bad_t = torch.tensor([bad], dtype=torch.long)
        if not ids:
            return [], {"speech": torch.zeros(0, 0), "speech_lengths": torch.zeros(0, dtype=torch.long),
                        "dropped_utterances": dropped_t, "bad_audio": bad_t}

        lengths = np.array([w.shape[0] for w in waves])
        if self.pad:
            targets = lengths if self.max_sample_size is None else np.minimum(lengths, self.max_sample_size)
        else:
            target = int(lengths.min()) if self.max_sample_size is None else min(int(lengths.min()),
                                                                                   self.max_sample_size)
            targets = np.full_like(lengths, target)
        width = int(targets.max())
        num_views = len(views[0])
        out = [np.zeros((len(ids), width), dtype=np.float32) for _ in range(num_views)]
        for i, (utt_views, length, target) in enumerate(zip(views, lengths, targets)):
            start = int(rng.integers(0, length - target + 1)) if length > target else 0
            for k in range(num_views):
                out[k][i, :target] = utt_views[k][start:start + target]

        batch = {"speech": torch.from_numpy(out[0]),
                 "speech_lengths": torch.from_numpy(targets.astype(np.int64))}
        if num_views > 1:
            batch["speech_aug"] = torch.from_numpy(out[1])
        if num_views > 2:
            batch["speech_teacher"] = torch.from_numpy(out[2])
        batch["dropped_utterances"] = dropped_t
        batch["bad_audio"] = bad_t
        return ids, batch


class MonoCollateFn:
    """``--collect_stats`` collate: ESPnet's padding collate after down-mixing ``speech`` to mono, so the
    shape files hold each utterance's full length in samples (at the file's own rate: ESPnet's streaming
    reader does not report it)."""

    def __call__(self, data: Collection[Tuple[str, Dict[str, np.ndarray]]]
                 ) -> Tuple[List[str], Dict[str, torch.Tensor]]:
        from espnet2.train.collate_fn import common_collate_fn

        def mono(v, uid):
            v = np.asarray(v)
            return np.zeros(0, dtype=np.float32) if is_bad_audio(v) else downmix(v, uid)

        data = [(uid, {k: mono(v, uid) if k == "speech" else v for k, v in item.items()}) for uid, item in data]
        return common_collate_fn(data, float_pad_value=0.0, int_pad_value=-1)


class SampleRateGuard(collections.abc.Mapping):
    """Wraps ESPnet's ``AdapterForSoundScpReader``: the sample-rate rule (see the module docstring).

    ``loader[key]`` returns the array like the adapter does (``(samples,)`` or ``(samples, channels)``,
    cast to its dtype), after checking the file's rate against ``sample_rate`` and, with ``resample``,
    converting it. Files of different rates may be mixed in one list (the adapter would refuse).
    """

    def __init__(self, adapter, name: str, sample_rate: int = 16000, resample: bool = False):
        self.adapter = adapter
        self.name = name
        self.sample_rate = int(sample_rate)
        self.resample = bool(resample)

    def keys(self):
        return self.adapter.keys()

    def __len__(self) -> int:
        return len(self.adapter)

    def __iter__(self):
        return iter(self.adapter)

    def _path(self, key: str) -> Optional[str]:
        """The file behind ``key`` (None when the reader does not say)."""
        get_path = getattr(self.adapter.loader, "get_path", None)
        try:
            return str(get_path(key)) if get_path is not None else None
        except Exception:  # noqa: BLE001
            return None

    def __getitem__(self, key: str) -> np.ndarray:
        retval = self.adapter.loader[key]
        rate = None
        if isinstance(retval, tuple) and len(retval) == 2:
            if isinstance(retval[1], np.ndarray):
                rate, array = retval
            else:
                array, rate = retval
        else:
            array = retval
        array = np.asarray(array)
        if rate is not None and int(rate) != self.sample_rate:
            if not self.resample:
                raise SampleRateError(
                    f"{self._path(key) or 'utterance ' + key} (id {key}, {self.name}): sample rate {int(rate)} Hz, but the model "
                    f"takes {self.sample_rate} Hz audio. Resample the data (e.g. the recipe's format stage, "
                    f"or sox), or set 'resample: true' to resample on the fly.")
            array = resample(array, int(rate), self.sample_rate)
        dtype = getattr(self.adapter, "dtype", None)
        if dtype is not None:
            array = array.astype(dtype)
        return array


def resample(array: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """``(samples,)`` or ``(samples, channels)`` from ``orig_rate`` to ``new_rate`` (torchaudio sinc)."""
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    y = AF.resample(x.T if x.ndim == 2 else x, orig_rate, new_rate)
    y = y.T if x.ndim == 2 else y
    return y.contiguous().numpy()
