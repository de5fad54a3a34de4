"""The one place that adapts third-party packages to the current torch/torchaudio stack.

torchaudio-augmentations 0.2.4 imports WavAugment (``import augment``) at package import time, for its
Reverb and PitchShift. WavAugment needs libsox through ``torchaudio.sox_effects``, which torchaudio >= 2.9
no longer has. Its pure-torch transforms (Noise, Gain, HighLowPass, Compose, RandomApply, ...) do not need
it, so a stand-in ``augment`` module lets the package import. Reverb and PitchShift then fail with a
clear message if called; aqc's own reverb (``aqc.augment``) replaces them.
"""
from __future__ import annotations

import importlib
import sys
import types

_SHIM_NAME = "augment"


class _SoxUnavailable:
    """Stands in for WavAugment's EffectChain."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(
            "WavAugment (sox) effects are not available with torchaudio >= 2.9: torchaudio-augmentations' "
            "Reverb and PitchShift cannot run. Use aqc.augment's reverberation (Freeverb-style or RIR "
            "convolution) instead."
        )


def _install_augment_shim() -> None:
    if _SHIM_NAME in sys.modules:
        return
    try:  # a real, working WavAugment wins
        importlib.import_module(_SHIM_NAME)
        return
    except Exception:  # noqa: BLE001 - any import failure means: use the shim
        sys.modules.pop(_SHIM_NAME, None)
    shim = types.ModuleType(_SHIM_NAME)
    shim.__doc__ = "aqc stand-in for WavAugment (sox effects unavailable)"
    shim.EffectChain = _SoxUnavailable
    shim.__aqc_shim__ = True
    sys.modules[_SHIM_NAME] = shim


def import_torchaudio_augmentations():
    """Import and return the ``torchaudio_augmentations`` package, installing the WavAugment shim first."""
    _install_augment_shim()
    return importlib.import_module("torchaudio_augmentations")
