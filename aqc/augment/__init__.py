"""Augmentation of the student view, without sox (decisions: "Augmentation").

``build_augmentation(conf)`` returns ``aug(waveform, rng) -> waveform``: Gaussian noise (p=0.6),
reverberation (p=0.7; Freeverb room or a real RIR), background noise from a MUSAN list (p=0.8, dB SNR),
each on its own coin, in that order. The data pipeline calls :func:`normalize` on each view afterwards.
Noise and RIR lists are made by ``utils/make_noise_list.py`` and ``utils/make_rir_list.py``.
"""
from .audio_list import AudioFileError, AudioList
from .chain import AugmentationChain, Stage, build_augmentation, build_chain
from .config import AugmentationConfig
from .transforms import (BackgroundNoise, BandLimit, FreeverbReverb, GaussianNoise, RirReverb, align_rir, fit_length,
                         mix_at_snr, normalize)

__all__ = [
    "AudioFileError",
    "AudioList",
    "AugmentationChain",
    "AugmentationConfig",
    "BackgroundNoise",
    "BandLimit",
    "FreeverbReverb",
    "GaussianNoise",
    "RirReverb",
    "Stage",
    "align_rir",
    "build_augmentation",
    "build_chain",
    "fit_length",
    "mix_at_snr",
    "normalize",
]
