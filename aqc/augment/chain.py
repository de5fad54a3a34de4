"""The augmentation chain: Gaussian noise, reverberation, background noise, each applied on its own coin."""
from __future__ import annotations

from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

from .audio_list import AudioList
from .config import AugmentationConfig
from .transforms import BackgroundNoise, BandLimit, FreeverbReverb, GaussianNoise, RirReverb

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class Stage(NamedTuple):
    name: str
    p: float
    transform: Transform


class AugmentationChain:
    """Applies each stage, in order, with its own probability (reference ``Compose`` of ``RandomApply``).

    All coins are drawn first, one per stage, whether or not earlier stages fire, so the random stream
    is laid out the same way for every sample.
    """

    def __init__(self, stages: List[Stage], band_limit: Optional[BandLimit] = None):
        self.stages = list(stages)
        self.band_limit = band_limit  # applied after the stages when one fired (the corpus's bandwidth)
        self._probs = np.array([stage.p for stage in self.stages], dtype=np.float64)

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply_with_trace(waveform, rng)[0]

    def apply_with_trace(self, waveform: np.ndarray,
                         rng: np.random.Generator) -> Tuple[np.ndarray, Tuple[str, ...]]:
        """The augmented waveform and the names of the stages that fired (for tests and logging)."""
        if waveform.ndim != 1:
            raise ValueError(f"augmentation expects a 1-D waveform, got shape {tuple(waveform.shape)}")
        fired = rng.random(len(self.stages)) < self._probs
        out = np.ascontiguousarray(waveform, dtype=np.float32)
        if out.shape[0] == 0:
            return waveform.copy(), ()
        names = []
        for stage, fire in zip(self.stages, fired):
            if fire:
                out = stage.transform(out, rng)
                names.append(stage.name)
        if names and self.band_limit is not None:
            out = self.band_limit(out)
        if out is waveform:  # nothing fired on float32 input: never hand back the caller's buffer
            out = out.copy()
        return out.astype(waveform.dtype, copy=False), tuple(names)

    def __repr__(self) -> str:
        stages = ", ".join(f"{s.name}(p={s.p:g}, {type(s.transform).__name__})" for s in self.stages)
        band = f", band_limit={self.band_limit.cutoff_hz:g} Hz" if self.band_limit is not None else ""
        return f"{type(self).__name__}({stages}{band})"


def _reverb_stage(conf: AugmentationConfig) -> Transform:
    if conf.rir_scp:
        return RirReverb(AudioList(conf.rir_scp, conf.sample_rate, what="RIR",
                                   remedy="regenerate the list with utils/make_rir_list.py"))
    return FreeverbReverb(conf.sample_rate, conf.reverb_room_size, conf.reverb_damping, conf.reverb_room_scale,
                          conf.reverb_wet_level, conf.reverb_dry_level)


def _background_stage(conf: AugmentationConfig) -> Transform:
    noises = AudioList(conf.noise_scp, conf.sample_rate, what="noise",
                       remedy="regenerate the list with utils/make_noise_list.py",
                       utt2dur=conf.noise_utt2dur, min_duration=conf.noise_min_duration)
    return BackgroundNoise(noises, conf.noise_snr_db, conf.short_noise)


def build_chain(conf: AugmentationConfig) -> AugmentationChain:
    """The chain for ``conf``; a stage with p = 0 is left out (and its files are never listed)."""
    stages = []
    if conf.gaussian_p > 0:
        stages.append(Stage("gaussian_noise", conf.gaussian_p, GaussianNoise(conf.gaussian_std_ratio)))
    if conf.reverb_p > 0:
        stages.append(Stage("reverb", conf.reverb_p, _reverb_stage(conf)))
    if conf.background_p > 0:
        stages.append(Stage("background_noise", conf.background_p, _background_stage(conf)))
    band_limit = None if conf.band_limit_hz is None else BandLimit(conf.sample_rate, conf.band_limit_hz)
    return AugmentationChain(stages, band_limit)


def build_augmentation(
    conf: Union[Mapping[str, Any], AugmentationConfig, None],
) -> Optional[AugmentationChain]:
    """The chain described by ``conf`` (``AugmentationConfig`` fields), or None for no augmentation.

    ``None`` and ``{}`` mean no augmentation; an unknown key raises ValueError listing the valid ones.
    The result is ``aug(waveform, rng) -> waveform`` for 1-D float audio and pickles into workers.
    """
    if conf is None:
        return None
    if not isinstance(conf, AugmentationConfig):
        if not conf:
            return None
        conf = AugmentationConfig.from_dict(dict(conf))
    return build_chain(conf)
