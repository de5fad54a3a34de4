"""Configuration of the student view's augmentation chain.

The reference (Speech-Lab-IITM/data2vec-aqc, ``raw_audio_dataset.py`` l.356-363) builds a
torchaudio-augmentations ``Compose`` of three ``RandomApply`` wrappers. Each field below names the
reference option it mirrors; where sox is gone, the docstring says how the option was mapped.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

Range = Tuple[float, float]

SHORT_NOISE_MODES = ("pad", "loop")


@dataclass
class AugmentationConfig:
    """Options of :func:`aqc.augment.build_augmentation` (reference option in brackets).

    Every ``(low, high)`` pair is a uniform range; ``low == high`` fixes the value.

    General
        sample_rate: rate of the waveforms and of every listed file [RandomBackgroundNoise(16000),
        Reverb(sample_rate=16000)].
    1. Gaussian noise
        gaussian_p [RandomApply(Noise, p=0.6)].
        gaussian_std_ratio: noise std as a fraction of the waveform's std
        [Noise(min_snr=0.001, max_snr=0.7): a std ratio, not dB; +60 dB to about +3 dB].
    2. Reverberation
        reverb_p [RandomApply(Reverb, p=0.7)].
        Freeverb room (pedalboard/JUCE). The reference ran sox ``reverb`` (also Freeverb-based) with
        reverberance, HF-damping and room-scale each drawn from 0..99 %:
        reverb_room_size [reverberance]: both set the comb feedback; sox spans 0.30..0.98, JUCE
        0.70..0.98, so 0..1 here covers sox's 24..99 % (weaker rooms are not reachable).
        reverb_damping [HF-damping]: the same one-pole damping coefficient; sox's 0.20..0.50 is JUCE's
        0.5..1.0 (JUCE stops at 0.40, sox's 50 %).
        reverb_room_scale [room-scale]: sox scales its comb delays by 0.1 + 0.9 x room-scale. JUCE scales
        its delays by the sample rate it is told, so the reverb runs with ``sample_rate x scale``:
        the same delays as sox, at no cost.
        reverb_wet_level, reverb_dry_level [wet-gain 0 dB; dry passed at unity]: JUCE multiplies them
        by 3 and 2, so (1/3, 1/2) reproduce sox's default ``dry + wet`` mix.
        rir_scp: a Kaldi-style ``<id> <path>`` list of room impulse responses
        (``utils/make_rir_list.py``); when set, reverberation convolves with a random real RIR instead.
    3. Background noise
        background_p [RandomApply(RandomBackgroundNoise, p=0.8)].
        noise_scp: Kaldi-style ``<id> <path>`` list (``utils/make_noise_list.py``) [the hard-coded
        ``musan/noise/free-sound`` directory]. Required when background_p > 0.
        noise_utt2dur: optional ``<id> <seconds>`` file beside it; with noise_min_duration > 0 it drops
        short noises without opening them.
        noise_snr_db: conventional dB SNR, from mean powers over the speech segment
        [min_snr_in_db=0, max_snr_in_db=15 through exp(): an effective 0..13 dB].
        short_noise: ``pad`` (zeros at the end, reference) or ``loop`` a noise shorter than the speech.
    Band
        band_limit_hz: the corpus's bandwidth [not in the reference, which augments full-band 16 kHz
        LibriSpeech]. When set, the augmented view is low-passed at this frequency (zero phase) after the
        stages that fired, so the noise adds nothing where the clean speech has no energy. A narrow-band
        corpus resampled to 16 kHz (8 kHz telephone or FSDD audio: 4000) needs it: without it the student
        sees noise above 4 kHz that the clean view, fine-tuning and test audio never have.
    """

    sample_rate: int = 16000
    # 1. Gaussian noise
    gaussian_p: float = 0.6
    gaussian_std_ratio: Range = (0.001, 0.7)
    # 2. reverberation
    reverb_p: float = 0.7
    reverb_room_size: Range = (0.0, 1.0)
    reverb_damping: Range = (0.5, 1.0)
    reverb_room_scale: Range = (0.1, 1.0)
    reverb_wet_level: Range = (1.0 / 3.0, 1.0 / 3.0)
    reverb_dry_level: Range = (0.5, 0.5)
    rir_scp: Optional[str] = None
    # 3. background noise
    background_p: float = 0.8
    noise_scp: Optional[str] = None
    noise_utt2dur: Optional[str] = None
    noise_min_duration: float = 0.0
    noise_snr_db: Range = (0.0, 13.0)
    short_noise: str = "pad"
    # band
    band_limit_hz: Optional[float] = None

    def __post_init__(self) -> None:
        for name in _range_fields():
            setattr(self, name, _as_range(name, getattr(self, name)))
        self.sample_rate = int(self.sample_rate)
        self._validate()

    def _validate(self) -> None:
        for name in ("gaussian_p", "reverb_p", "background_p"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"AugmentationConfig: {name} must be in [0, 1], got {getattr(self, name)}")
        checks = [
            (self.sample_rate > 0, "sample_rate must be positive"),
            (self.gaussian_std_ratio[0] >= 0.0, "gaussian_std_ratio must be >= 0"),
            (0.0 <= self.reverb_room_size[0] and self.reverb_room_size[1] <= 1.0, "reverb_room_size must be in [0, 1]"),
            (0.0 <= self.reverb_damping[0] and self.reverb_damping[1] <= 1.0, "reverb_damping must be in [0, 1]"),
            (0.0 < self.reverb_room_scale[0] and self.reverb_room_scale[1] <= 1.0,
             "reverb_room_scale must be in (0, 1]"),
            (self.reverb_wet_level[0] >= 0.0 and self.reverb_dry_level[0] >= 0.0, "reverb levels must be >= 0"),
            (self.short_noise in SHORT_NOISE_MODES, f"short_noise must be one of {SHORT_NOISE_MODES}"),
            (self.noise_min_duration >= 0.0, "noise_min_duration must be >= 0"),
            (self.band_limit_hz is None or 0.0 < float(self.band_limit_hz) <= self.sample_rate / 2,
             f"band_limit_hz must be above 0 and at most half the sample rate ({self.sample_rate / 2:g})"),
            (self.background_p == 0.0 or bool(self.noise_scp),
             "background_p > 0 needs noise_scp (make one with utils/make_noise_list.py, recipe stage 2), "
             "or set background_p: 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"AugmentationConfig: {message}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in _range_fields():
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AugmentationConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"AugmentationConfig: unknown option(s) {unknown}; valid options are: {sorted(known)}"
            )
        return cls(**d)


def _range_fields() -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(AugmentationConfig) if f.type == "Range")


def _as_range(name: str, value: Any) -> Range:
    # YAML gives lists; a bare number means a fixed value
    if isinstance(value, (int, float)):
        value = (value, value)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"AugmentationConfig: {name} must be a (low, high) pair, got {value!r}") from None
    if low > high:
        raise ValueError(f"AugmentationConfig: {name} low {low} is above high {high}")
    return (low, high)
