"""aqc.augment: the Gaussian noise / reverberation / background noise chain, on real recordings."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
import pytest
import soundfile as sf

from aqc.augment import (AudioFileError, AudioList, AugmentationConfig, FreeverbReverb, GaussianNoise, RirReverb,
                         align_rir, build_augmentation, normalize)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SR = 16000
SBRIR = DATA / "rir" / "speechbrain" / "tests" / "samples" / "RIRs"
# RIRs with a clear direct path; the others are so diffuse that cross-correlation peaks on the tail
DIRECT_PATH_RIRS = [SBRIR / f"rir{i}.wav" for i in (1, 2, 3, 4)] + [DATA / "rir/lhotse/test/fixtures/rir/sim_1ch.wav"]


def _require(path: Path) -> Path:
    assert path.exists(), f"test data missing: {path} (expected the shared data beside the checkout)"
    return path


def write_scp(path: Path, files) -> str:
    path.write_text("".join(f"utt{i:03d} {f}\n" for i, f in enumerate(files)))
    return str(path)


def measured_snr_db(clean: np.ndarray, mixed: np.ndarray) -> float:
    noise = mixed.astype(np.float64) - clean
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise ** 2))


def lag_of_peak(y: np.ndarray, x: np.ndarray) -> int:
    n = 2 * len(x)
    corr = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    lag = int(np.argmax(np.abs(corr)))
    return lag if lag < len(x) else lag - n


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    path = sorted(_require(DATA / "librispeech_unlabeled").rglob("*.flac"))[0]
    wav, rate = sf.read(str(path), dtype="float32")
    assert rate == SR
    return wav[: 3 * SR]


@pytest.fixture(scope="module")
def noise_files():
    return sorted(_require(DATA / "musan" / "noise" / "free-sound").glob("*.wav"))


@pytest.fixture()
def noise_scp(tmp_path, noise_files) -> str:
    return write_scp(tmp_path / "noise.scp", noise_files)


@pytest.fixture()
def rir_scp(tmp_path) -> str:
    # raw files on purpose: 48 kHz and multi-channel ones exercise resampling and channel choice
    return write_scp(tmp_path / "rir.scp", sorted(_require(DATA / "rir").rglob("*.wav")))


def only(stage: str, **extra) -> dict:
    probs = {"gaussian_p": 0.0, "reverb_p": 0.0, "background_p": 0.0, f"{stage}_p": 1.0}
    return {**probs, **extra}


# configuration ---------------------------------------------------------------------------------------

def test_none_and_empty_mean_no_augmentation():
    assert build_augmentation(None) is None
    assert build_augmentation({}) is None


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown option.*'snr'.*valid options are.*noise_snr_db"):
        build_augmentation({"snr": 5})


def test_background_noise_needs_a_list():
    with pytest.raises(ValueError, match="noise_scp.*make_noise_list.py"):
        build_augmentation({"gaussian_p": 0.5})
    assert build_augmentation({"background_p": 0.0}) is not None


def test_yaml_lists_become_ranges_and_bad_ranges_fail():
    conf = AugmentationConfig.from_dict({"noise_snr_db": [3, 7], "reverb_wet_level": 0.2, "background_p": 0})
    assert conf.noise_snr_db == (3.0, 7.0) and conf.reverb_wet_level == (0.2, 0.2)
    with pytest.raises(ValueError, match="noise_snr_db low 9.0 is above high 1.0"):
        AugmentationConfig(noise_snr_db=(9, 1), background_p=0)
    with pytest.raises(ValueError, match="reverb_p must be in"):
        AugmentationConfig(reverb_p=1.5, background_p=0)
    with pytest.raises(ValueError, match="short_noise"):
        AugmentationConfig(short_noise="wrap", background_p=0)


def test_defaults_are_the_reference_chain(noise_scp):
    conf = AugmentationConfig(noise_scp=noise_scp)
    assert (conf.gaussian_p, conf.reverb_p, conf.background_p) == (0.6, 0.7, 0.8)
    assert conf.gaussian_std_ratio == (0.001, 0.7) and conf.noise_snr_db == (0.0, 13.0)
    assert conf.short_noise == "pad"
    aug = build_augmentation(conf)
    assert [s.name for s in aug.stages] == ["gaussian_noise", "reverb", "background_noise"]
    assert isinstance(aug.stages[1].transform, FreeverbReverb)
    assert isinstance(build_augmentation({**conf.to_dict(), "rir_scp": noise_scp}).stages[1].transform, RirReverb)


# 1. Gaussian noise ------------------------------------------------------------------------------------

def test_gaussian_noise_std_is_the_drawn_fraction_of_the_signal_std(speech):
    rng = np.random.default_rng(0)
    for ratio in (0.001, 0.1, 0.7):
        out = GaussianNoise((ratio, ratio))(speech, rng)
        assert out.dtype == np.float32 and out.shape == speech.shape
        assert np.std(out - speech) / np.std(speech) == pytest.approx(ratio, rel=0.02)
    ratios = [np.std(GaussianNoise()(speech, rng) - speech) / np.std(speech) for _ in range(200)]
    assert 0.001 * 0.98 <= min(ratios) < 0.05 and 0.65 < max(ratios) <= 0.7 * 1.02


# 2. reverberation -------------------------------------------------------------------------------------

def test_freeverb_changes_signal_keeps_length_and_dtype(speech):
    aug = build_augmentation(only("reverb"))
    rng = np.random.default_rng(1)
    for x in (speech, speech.astype(np.float64)):
        out = aug(x, rng)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert np.abs(out - x).max() > 0.01 * np.abs(x).max()


def test_freeverb_passes_dry_signal_unshifted_and_room_scale_shortens_the_tail():
    impulse = np.zeros(2 * SR, np.float32)
    impulse[0] = 1.0

    def tail_20db(scale: float) -> int:
        h = FreeverbReverb(room_size=(0.8, 0.8), room_scale=(scale, scale))(impulse, np.random.default_rng(0))
        assert h[0] == pytest.approx(1.0)  # sox's default dry + wet: the dry path at unity, lag 0
        energy = np.cumsum(h[1:][::-1].astype(np.float64) ** 2)[::-1]
        return int(np.argmax(energy < 0.01 * energy[0]))

    small, large = tail_20db(0.1), tail_20db(1.0)
    assert large > 5 * small > 0


def test_rir_convolution_is_aligned_with_the_input(speech, tmp_path):
    rirs = RirReverb(AudioList(write_scp(tmp_path / "r.scp", [_require(p) for p in DIRECT_PATH_RIRS]), SR))
    rng = np.random.default_rng(2)
    lags = {lag_of_peak(rirs(speech, rng), speech) for _ in range(20)}
    assert max(abs(lag) for lag in lags) <= 2, lags


def test_align_rir_removes_the_direct_path_delay_and_normalises_energy():
    rir, _ = sf.read(str(_require(SBRIR / "rir2.wav")), dtype="float32")
    delayed = np.concatenate([np.zeros(137, np.float32), rir])
    aligned = align_rir(delayed)
    np.testing.assert_array_equal(aligned, align_rir(rir))
    assert np.argmax(np.abs(aligned)) == 0
    assert float(np.sum(aligned.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-5)


def test_rir_list_resamples_and_keeps_the_first_channel(rir_scp):
    rirs = AudioList(rir_scp, SR, what="RIR")
    by_name = {Path(e.path).name: e for e in rirs.entries}
    rir48 = rirs.read_whole(by_name["rir48000.wav"], channel="first")
    assert len(rir48) == pytest.approx(63145 / 3, abs=1)
    eight, _ = sf.read(str(DATA / "rir/lhotse/test/fixtures/rir/real_8ch.wav"), dtype="float32")
    np.testing.assert_array_equal(rirs.read_whole(by_name["real_8ch.wav"], channel="first"), eight[:, 0])


def test_rir_chain_keeps_length_and_dtype(speech, rir_scp):
    aug = build_augmentation(only("reverb", rir_scp=rir_scp))
    rng = np.random.default_rng(3)
    for _ in range(10):
        out = aug(speech, rng)
        assert out.shape == speech.shape and out.dtype == np.float32 and np.isfinite(out).all()
        assert not np.allclose(out, speech)


# 3. background noise ----------------------------------------------------------------------------------

@pytest.mark.parametrize("snr_db", [0.0, 5.0, 13.0])
def test_background_noise_is_mixed_at_the_requested_snr(speech, noise_scp, snr_db):
    aug = build_augmentation(only("background", noise_scp=noise_scp, noise_snr_db=[snr_db, snr_db]))
    rng = np.random.default_rng(4)
    for _ in range(10):
        assert measured_snr_db(speech, aug(speech, rng)) == pytest.approx(snr_db, abs=0.5)


def test_background_snr_spans_the_range(speech, noise_scp):
    aug = build_augmentation(only("background", noise_scp=noise_scp))
    rng = np.random.default_rng(5)
    snrs = [measured_snr_db(speech, aug(speech, rng)) for _ in range(60)]
    assert -0.5 <= min(snrs) < 3.0 and 10.0 < max(snrs) <= 13.5


def test_short_noise_is_padded_or_looped(speech, tmp_path, noise_files):
    short = noise_files[0]  # about 1.3 s, shorter than the 3 s speech
    length = sf.info(str(short)).frames
    assert length < len(speech)
    scp = write_scp(tmp_path / "short.scp", [short])
    rng = np.random.default_rng(6)
    padded = build_augmentation(only("background", noise_scp=scp))(speech, rng) - speech
    assert np.all(padded[length:] == 0) and np.any(padded[:length] != 0)
    looped = build_augmentation(only("background", noise_scp=scp, short_noise="loop"))(speech, rng) - speech
    np.testing.assert_allclose(looped[length:2 * length], looped[:length], atol=1e-6)


def test_long_noise_is_read_as_a_random_segment(tmp_path):
    long_file = _require(DATA / "musan/music/opsound").glob("*.wav").__next__()
    full, _ = sf.read(str(long_file), dtype="float32")
    noises = AudioList(write_scp(tmp_path / "long.scp", [long_file]), SR)
    rng = np.random.default_rng(7)
    starts = set()
    for _ in range(5):
        segment = noises.read_segment(noises.entries[0], SR, rng)
        assert len(segment) == SR
        candidates = [i for i in np.flatnonzero(full == segment[0]) if np.array_equal(full[i:i + SR], segment)]
        assert candidates, "the segment is not a contiguous piece of the file"
        starts.add(candidates[0])
    assert len(starts) == 5


def test_noise_at_another_rate_or_stereo_is_resampled_and_downmixed(tmp_path, noise_files):
    mono, _ = sf.read(str(noise_files[0]), dtype="float32")
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    path = tmp_path / "stereo8k.wav"
    sf.write(str(path), stereo, 8000)  # declared 8 kHz: the list must bring it to 16 kHz
    noises = AudioList(write_scp(tmp_path / "s.scp", [path]), SR)
    whole = noises.read_whole(noises.entries[0])
    assert len(whole) == 2 * len(mono)
    original_times = whole[0::2]  # upsampling by 2 keeps the original samples at even positions
    assert np.corrcoef(original_times, mono)[0, 1] > 0.99
    assert np.std(original_times) / np.std(mono) == pytest.approx(0.75, rel=0.03)
    assert len(noises.read_segment(noises.entries[0], 4000, np.random.default_rng(0))) == 4000


def test_min_duration_drops_short_noises_using_utt2dur(tmp_path, noise_files):
    scp = write_scp(tmp_path / "n.scp", noise_files)
    durations = {f"utt{i:03d}": sf.info(str(f)).duration for i, f in enumerate(noise_files)}
    utt2dur = tmp_path / "utt2dur"
    utt2dur.write_text("".join(f"{k} {v}\n" for k, v in durations.items()))
    kept = AudioList(scp, SR, utt2dur=str(utt2dur), min_duration=1.5)
    assert {e.key for e in kept.entries} == {k for k, v in durations.items() if v >= 1.5}
    assert 0 < len(kept) < len(noise_files)


# the chain ---------------------------------------------------------------------------------------------

def within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("probs", [(0.6, 0.7, 0.8), (0.1, 0.5, 0.95)])
def test_each_stage_fires_with_its_probability(speech, noise_scp, probs):
    aug = build_augmentation({"noise_scp": noise_scp, "gaussian_p": probs[0], "reverb_p": probs[1],
                              "background_p": probs[2]})
    tiny = speech[SR:SR + 160]  # the coins, not the audio, are under test
    rng, n = np.random.default_rng(8), 2000
    fired = np.array([[name in trace for name in ("gaussian_noise", "reverb", "background_noise")]
                      for trace in (aug.apply_with_trace(tiny, rng)[1] for _ in range(n))])
    for column, p in enumerate(probs):
        assert within_4_sigma(int(fired[:, column].sum()), n, p), (column, fired[:, column].sum(), n * p)
    # independent coins: the joint rate is the product
    assert within_4_sigma(int((fired[:, 0] & fired[:, 2]).sum()), n, probs[0] * probs[2])
    assert within_4_sigma(int((~fired.any(axis=1)).sum()), n, float(np.prod([1 - p for p in probs])))


@pytest.mark.parametrize("with_rir", [False, True])
def test_same_seed_same_output_and_different_seeds_differ(speech, noise_scp, rir_scp, with_rir):
    conf = {"noise_scp": noise_scp, "gaussian_p": 1, "reverb_p": 1, "background_p": 1}
    aug = build_augmentation({**conf, "rir_scp": rir_scp} if with_rir else conf)
    a = aug(speech, np.random.default_rng(123))
    np.testing.assert_array_equal(a, aug(speech, np.random.default_rng(123)))
    clone = pickle.loads(pickle.dumps(aug))  # after use: the native reverb must not be in the state
    np.testing.assert_array_equal(a, clone(speech, np.random.default_rng(123)))
    assert not np.allclose(a, aug(speech, np.random.default_rng(124)))


def test_variable_lengths_keep_length_and_dtype(speech, noise_scp, rir_scp):
    rng = np.random.default_rng(9)
    for conf in ({"noise_scp": noise_scp}, {"noise_scp": noise_scp, "rir_scp": rir_scp}):
        aug = build_augmentation({**conf, "gaussian_p": 1, "reverb_p": 1, "background_p": 1})
        for length in (1, 37, 400, SR + 7, len(speech)):
            out = aug(speech[:length], rng)
            assert out.shape == (length,) and out.dtype == np.float32 and np.isfinite(out).all()
        assert aug(speech[:0], rng).shape == (0,)
    with pytest.raises(ValueError, match="1-D"):
        aug(np.zeros((2, 100), np.float32), rng)


def test_input_is_not_modified_and_not_returned(speech, noise_scp):
    aug = build_augmentation({"noise_scp": noise_scp, "gaussian_p": 0, "reverb_p": 0, "background_p": 0.0})
    x = speech.copy()
    out = aug(x, np.random.default_rng(0))
    assert out is not x and np.array_equal(out, speech)


# bad files ------------------------------------------------------------------------------------------

@pytest.fixture()
def bad_files(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x01garbage, not a wave file" * 20)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), SR)
    return {"corrupt": corrupt, "empty": empty}


@pytest.mark.parametrize("kind", ["corrupt", "empty"])
@pytest.mark.parametrize("stage", ["background", "reverb"])
def test_bad_listed_file_names_its_path(speech, tmp_path, bad_files, kind, stage):
    scp = write_scp(tmp_path / "bad.scp", [bad_files[kind]])
    key = "noise_scp" if stage == "background" else "rir_scp"
    aug = build_augmentation({**only(stage), key: scp, **({"noise_scp": scp} if stage == "reverb" else {})})
    script = "make_noise_list.py" if stage == "background" else "make_rir_list.py"
    with pytest.raises(AudioFileError, match=f"{bad_files[kind]}.*{script}"):
        aug(speech, np.random.default_rng(0))


def test_missing_listed_file_fails_at_construction(tmp_path, noise_files):
    missing = tmp_path / "gone.wav"
    scp = write_scp(tmp_path / "m.scp", [noise_files[0], missing])
    with pytest.raises(FileNotFoundError, match=f"{missing}.*make_noise_list.py"):
        build_augmentation({"noise_scp": scp})


def test_empty_or_absent_list_fails_at_construction(tmp_path):
    empty = tmp_path / "empty.scp"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=f"{empty}.*no usable entries.*make_noise_list.py"):
        build_augmentation({"noise_scp": str(empty)})
    with pytest.raises(FileNotFoundError, match="nowhere.scp.*make_rir_list.py"):
        build_augmentation({"rir_scp": str(tmp_path / "nowhere.scp"), "background_p": 0})


# normalisation ----------------------------------------------------------------------------------------

def test_normalize_is_the_references_layer_norm_and_survives_silence(speech):
    """The reference's F.layer_norm(wav, wav.shape) (eps 1e-5 added to the variance), also the ASR
    frontend's rule: pre-training and fine-tuning see the same scale."""
    import torch.nn.functional as F

    from aqc.espnet.frontend import normalize_waveforms

    for scale in (1.0, 0.01):  # at RMS 0.01 the eps matters: about 5 % below unit variance
        x = (speech * scale / np.sqrt(np.mean(speech ** 2)) + 0.3).astype(np.float32)
        out = normalize(x)
        assert out.dtype == np.float32 and abs(float(out.mean())) < 1e-5
        reference = F.layer_norm(torch.from_numpy(x), x.shape).numpy()
        np.testing.assert_allclose(out, reference, atol=1e-5)
        frontend = normalize_waveforms(torch.from_numpy(x)[None], torch.tensor([x.size]))[0].numpy()
        np.testing.assert_allclose(out, frontend, atol=1e-5)
    assert float(normalize(x).std()) == pytest.approx(0.01 / np.sqrt(1e-4 + 1e-5), abs=1e-3)
    silent = normalize(np.full(1000, 0.25, np.float32))
    assert np.isfinite(silent).all() and np.all(silent == 0)
    assert normalize(np.zeros(0, np.float32)).shape == (0,)


# band limit (narrow-band corpora) ---------------------------------------------------------------------

def _band_power(x: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spectrum[(freqs > low) & (freqs <= high)].sum())


@pytest.fixture(scope="module")
def narrowband_speech() -> np.ndarray:
    """An 8 kHz FSDD recording resampled to 16 kHz, as the recipes read it: nothing above 4 kHz."""
    import torchaudio

    wav, rate = sf.read(str(_require(DATA / "fsdd" / "recordings" / "3_theo_10.wav")), dtype="float32")
    assert rate == 8000
    return torchaudio.functional.resample(torch.from_numpy(wav), 8000, SR).numpy()


def test_band_limit_removes_what_the_noise_adds_above_the_corpus_band(narrowband_speech, noise_scp):
    x = narrowband_speech
    assert _band_power(x, 4100, 8000) < 1e-3 * _band_power(x, 0, 4000)  # the DFT's leakage only
    conf = {"gaussian_std_ratio": [0.3, 0.3], "noise_scp": noise_scp, "reverb_p": 0.0, "gaussian_p": 1.0,
            "background_p": 1.0}
    wide = build_augmentation(conf)(x, np.random.default_rng(0))
    narrow = build_augmentation({**conf, "band_limit_hz": 4000})(x, np.random.default_rng(0))
    # without the limit the noise puts power where the speech has none: 100 times the speech's own leakage
    assert _band_power(wide, 4100, 8000) > 0.01 * _band_power(wide, 0, 4000)
    assert _band_power(narrow, 4000.5, 8000) == pytest.approx(0.0, abs=1e-9 * _band_power(narrow, 0, 4000))
    # below the cut the two views are the same signal (same draws), and nothing is shifted
    np.testing.assert_allclose(_band_power(narrow, 0, 3900), _band_power(wide, 0, 3900), rtol=1e-3)
    assert lag_of_peak(narrow, x) == 0
    assert narrow.dtype == np.float32 and narrow.shape == x.shape


def test_band_limit_leaves_band_limited_speech_and_unaugmented_views_alone(narrowband_speech):
    x = narrowband_speech
    from aqc.augment import BandLimit

    passed = BandLimit(SR, 4000)(x)
    assert np.linalg.norm(passed - x) < 0.02 * np.linalg.norm(x)  # -34 dB: the leakage of a finite signal
    # no stage fired: the view is the input, bit for bit (the limit is not applied to clean audio)
    chain = build_augmentation({"gaussian_p": 0.0, "reverb_p": 0.0, "background_p": 0.0, "band_limit_hz": 3000})
    np.testing.assert_array_equal(chain(x, np.random.default_rng(1)), x)
    assert "band_limit=4000 Hz" in repr(build_augmentation(only("gaussian", band_limit_hz=4000)))
    for bad in (0, -1, 8001):
        with pytest.raises(ValueError, match="band_limit_hz must be above 0 and at most half the sample rate"):
            AugmentationConfig.from_dict({"background_p": 0.0, "band_limit_hz": bad})
