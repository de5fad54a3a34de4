"""The three stages of the augmentation chain, and view normalisation.

Each stage is a picklable callable ``stage(waveform, rng) -> waveform`` on 1-D float32 audio that keeps
the length; all randomness comes from the ``numpy.random.Generator`` passed in, so a worker seeded once
reproduces its samples exactly.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .audio_list import AudioList
from .config import Range


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    low, high = bounds
    return low if low == high else float(rng.uniform(low, high))


def _power(x: np.ndarray) -> float:
    # float64 accumulation: float32 sums of 10^6 squares lose about a decibel's worth of digits
    return float(np.dot(x.astype(np.float64), x.astype(np.float64)) / max(x.size, 1))


NORMALIZE_EPS = 1e-5  # F.layer_norm's default, added to the variance


def normalize(waveform: np.ndarray, eps: float = NORMALIZE_EPS) -> np.ndarray:
    """Zero mean, unit variance by the reference's rule, ``F.layer_norm(wav, wav.shape)``: ``eps`` is added to
    the variance, so a silent (constant) waveform becomes zeros and a very quiet one stays below unit
    variance. The ASR frontend normalises by the same rule, so pre-training, fine-tuning, decoding and
    :func:`aqc.api.load_waveform` see the same scale (and imported fairseq models the scale they were
    trained on).
    """
    x = waveform.astype(np.float64)
    if not x.size:
        return waveform
    centred = x - x.mean()
    return (centred / np.sqrt(np.mean(centred ** 2) + eps)).astype(waveform.dtype, copy=False)


class GaussianNoise:
    """White noise whose std is U[low, high] x the waveform's std (reference ``Noise``)."""

    def __init__(self, std_ratio: Range = (0.001, 0.7)):
        self.std_ratio = std_ratio

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        std = _uniform(rng, self.std_ratio) * float(waveform.std())
        noise = rng.standard_normal(waveform.shape[0], dtype=np.float32)
        noise *= np.float32(std)
        return waveform + noise


class FreeverbReverb:
    """A Freeverb room (``pedalboard.Reverb``, JUCE), standing in for sox ``reverb``.

    ``room_scale`` shrinks the comb and all-pass delays as sox's room-scale does: JUCE sizes its delays
    from the sample rate it is given, so the waveform is processed as if sampled at ``rate x scale``.
    The dry signal passes without delay, so speech is not shifted.
    """

    def __init__(self, sample_rate: int = 16000, room_size: Range = (0.0, 1.0), damping: Range = (0.5, 1.0),
                 room_scale: Range = (0.1, 1.0), wet_level: Range = (1 / 3, 1 / 3), dry_level: Range = (0.5, 0.5)):
        self.sample_rate = sample_rate
        self.room_size = room_size
        self.damping = damping
        self.room_scale = room_scale
        self.wet_level = wet_level
        self.dry_level = dry_level
        self._reverb = None  # native object: not picklable, built on first use in each process

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_reverb"] = None
        return state

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        reverb = self._plugin()
        reverb.room_size = _uniform(rng, self.room_size)
        reverb.damping = _uniform(rng, self.damping)
        reverb.wet_level = _uniform(rng, self.wet_level)
        reverb.dry_level = _uniform(rng, self.dry_level)
        rate = self.sample_rate * _uniform(rng, self.room_scale)
        # one call on the whole signal; reset=True clears the tail of the previous utterance
        return reverb.process(waveform, rate, reset=True)

    def _plugin(self):
        if self._reverb is None:
            import pedalboard

            self._reverb = pedalboard.Reverb(width=1.0, freeze_mode=0.0)
        return self._reverb


def align_rir(rir: np.ndarray, max_length: Optional[int] = None) -> np.ndarray:
    """Start the RIR at its peak (the direct path) and scale it to unit energy.

    Starting at the peak removes the source-to-microphone delay, so the reverberant speech stays
    time-aligned with the clean view; unit energy keeps levels comparable across rooms.
    """
    rir = rir[int(np.argmax(np.abs(rir))):]
    if max_length is not None:
        rir = rir[:max_length]  # taps beyond the output length cannot reach it
    energy = float(np.sqrt(_power(rir) * rir.size))
    return (rir / energy).astype(np.float32) if energy > 0.0 else rir.astype(np.float32)


class RirReverb:
    """Convolution with a real room impulse response drawn from an ``rir_scp`` list."""

    def __init__(self, rirs: AudioList):
        self.rirs = rirs

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        num_frames = waveform.shape[0]
        # first channel, not a mix: averaging microphones at different positions comb-filters the RIR
        rir = align_rir(self.rirs.read_whole(self.rirs.choose(rng), channel="first"), num_frames)
        from scipy.signal import oaconvolve  # here, not at module level: list-making scripts start faster

        return oaconvolve(waveform, rir)[:num_frames].astype(np.float32, copy=False)


def fit_length(noise: np.ndarray, num_frames: int, mode: str = "pad") -> np.ndarray:
    """Zero-pad at the end (reference) or loop a noise shorter than ``num_frames``."""
    if noise.shape[0] >= num_frames:
        return noise[:num_frames]
    if mode == "loop":
        return np.resize(noise, num_frames)
    return np.pad(noise, (0, num_frames - noise.shape[0]))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + g * noise`` with 10 log10(P_speech / P_{g noise}) = ``snr_db``, powers over the speech.

    Silent speech or silent noise is returned unchanged: no gain gives the requested ratio.
    """
    speech_power, noise_power = _power(speech), _power(noise)
    if speech_power == 0.0 or noise_power == 0.0:
        return speech.copy()
    gain = np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return speech + np.float32(gain) * noise


class BackgroundNoise:
    """A random segment of a random listed noise, mixed at a dB SNR (reference ``RandomBackgroundNoise``)."""

    def __init__(self, noises: AudioList, snr_db: Range = (0.0, 13.0), short_noise: str = "pad"):
        self.noises = noises
        self.snr_db = snr_db
        self.short_noise = short_noise

    def __call__(self, waveform: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        num_frames = waveform.shape[0]
        noise = self.noises.read_segment(self.noises.choose(rng), num_frames, rng)
        noise = fit_length(noise, num_frames, self.short_noise)
        return mix_at_snr(waveform, noise, _uniform(rng, self.snr_db))


class BandLimit:
    """Zero-phase low-pass: the spectrum above ``cutoff_hz`` is set to zero (one FFT of the whole waveform).

    No delay, so the view stays aligned with the clean one. Speech already limited to the band changes
    by about -40 dB (the DFT of a finite waveform leaks a little above the band; that part is removed).
    """

    def __init__(self, sample_rate: int, cutoff_hz: float):
        self.sample_rate = int(sample_rate)
        self.cutoff_hz = float(cutoff_hz)

    def __call__(self, waveform: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        n = waveform.shape[0]
        if n == 0 or self.cutoff_hz >= self.sample_rate / 2:
            return waveform
        spectrum = np.fft.rfft(waveform.astype(np.float64))
        spectrum[np.fft.rfftfreq(n, 1.0 / self.sample_rate) > self.cutoff_hz] = 0.0
        return np.fft.irfft(spectrum, n).astype(np.float32)
