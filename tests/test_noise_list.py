"""utils/make_noise_list.py and utils/make_rir_list.py on the shared MUSAN and RIR stand-ins."""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from aqc.augment import build_augmentation
from aqc.augment.make_list import make_keys

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MUSAN = DATA / "musan"


def load_script(script: str):
    spec = importlib.util.spec_from_file_location(script.replace(".py", ""), REPO / "utils" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script: str, *args) -> None:
    """The script's main() in this process (imports are paid once)."""
    load_script(script).main([str(a) for a in args])


def fails(script: str, *args) -> str:
    """The message of the SystemExit the script stops with."""
    with pytest.raises(SystemExit) as stop:
        run(script, *args)
    return str(stop.value)


def read_table(path: Path) -> list:
    return [line.split(maxsplit=1) for line in path.read_text().splitlines()]


def check_list(out_dir: Path, sample_rate: int = 16000) -> dict:
    """wav.scp and utt2dur agree, are sorted, ids unique; every file is mono at the rate; returns id -> path."""
    scp, utt2dur = read_table(out_dir / "wav.scp"), read_table(out_dir / "utt2dur")
    keys = [k for k, _ in scp]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert [k for k, _ in utt2dur] == keys
    for (key, path), (_, seconds) in zip(scp, utt2dur):
        info = sf.info(path)
        assert info.samplerate == sample_rate and info.channels == 1
        assert float(seconds) == pytest.approx(info.frames / sample_rate, abs=1e-6)
    return dict(scp)


@pytest.fixture(scope="module")
def musan() -> Path:
    assert MUSAN.is_dir(), f"test data missing: {MUSAN} (expected the shared data beside the checkout)"
    return MUSAN


def test_help():
    for script, option in (("make_noise_list.py", "--musan_root"), ("make_rir_list.py", "--rir_dir")):
        out = subprocess.run([sys.executable, str(REPO / "utils" / script), "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and option in out.stdout and "--out_dir" in out.stdout


def test_musan_free_sound_default(musan, tmp_path):
    run("make_noise_list.py", "--musan_root", musan, "--out_dir", tmp_path / "noise")
    listed = check_list(tmp_path / "noise")
    expected = sorted((musan / "noise" / "free-sound").glob("*.wav"))
    assert sorted(Path(p) for p in listed.values()) == [p.resolve() for p in expected]
    assert "noise-free-sound-fillets-sp-bubles_00" in listed
    assert not (tmp_path / "noise" / "converted").exists()  # already 16 kHz mono: listed in place
    # the list is what the augmentation reads
    aug = build_augmentation({"noise_scp": str(tmp_path / "noise" / "wav.scp"),
                              "noise_utt2dur": str(tmp_path / "noise" / "utt2dur"), "background_p": 1.0})
    assert len(aug.stages[-1].transform.noises) == len(expected)


def test_several_subsets(musan, tmp_path):
    run("make_noise_list.py", "--musan_root", musan, "--subsets", "noise,music", "--out_dir", tmp_path)
    listed = check_list(tmp_path)
    expected = [p for sub in ("noise", "music") for p in (musan / sub).rglob("*.wav")]
    assert len(listed) == len(expected)
    assert {k.split("-")[0] for k in listed} == {"noise", "music"}


def test_other_rates_and_channels_are_converted(musan, tmp_path):
    root = tmp_path / "musan"
    (root / "noise" / "mine").mkdir(parents=True)
    mono, _ = sf.read(str(sorted((musan / "noise" / "free-sound").glob("*.wav"))[0]), dtype="float32")
    second = np.resize(mono, 44100)  # one second at 44.1 kHz
    sf.write(str(root / "noise/mine/stereo 44k.wav"), np.stack([second, -second], axis=1), 44100)
    sf.write(str(root / "noise/mine/plain.flac"), mono, 16000)
    run("make_noise_list.py", "--musan_root", root, "--subsets", "noise/mine", "--out_dir", tmp_path / "out")
    listed = check_list(tmp_path / "out")
    assert set(listed) == {"noise-mine-stereo_44k", "noise-mine-plain"}
    converted = Path(listed["noise-mine-stereo_44k"])
    assert converted.parent == (tmp_path / "out" / "converted" / "noise" / "mine").resolve()
    assert sf.info(str(converted)).frames == 16000
    assert np.allclose(sf.read(str(converted))[0], 0.0, atol=1e-6)  # (x + -x) / 2: a true down-mix
    assert Path(listed["noise-mine-plain"]) == (root / "noise/mine/plain.flac").resolve()


def test_unreadable_files_are_skipped_and_counted(musan, tmp_path, caplog):
    root = tmp_path / "musan"
    (root / "noise" / "x").mkdir(parents=True)
    good, _ = sf.read(str(sorted((musan / "noise" / "free-sound").glob("*.wav"))[0]), dtype="float32")
    sf.write(str(root / "noise/x/good.wav"), good, 16000)
    (root / "noise/x/garbage.wav").write_bytes(b"not audio at all" * 64)
    sf.write(str(root / "noise/x/empty.wav"), np.zeros(0, np.float32), 16000)
    with caplog.at_level(logging.WARNING):
        run("make_noise_list.py", "--musan_root", root, "--subsets", "noise/x", "--out_dir", tmp_path / "out")
    assert list(check_list(tmp_path / "out")) == ["noise-x-good"]
    assert "garbage.wav" in caplog.text and "empty.wav" in caplog.text
    assert "skipped 2 unreadable noise file(s) of 3" in caplog.text


def test_wrong_or_empty_root_fails_with_the_path(tmp_path):
    assert str(tmp_path / "nowhere") in fails("make_noise_list.py", "--musan_root", tmp_path / "nowhere",
                                              "--out_dir", tmp_path / "out")
    (tmp_path / "musan" / "noise" / "free-sound").mkdir(parents=True)
    message = fails("make_noise_list.py", "--musan_root", tmp_path / "musan", "--out_dir", tmp_path / "out")
    assert "no readable noise audio" in message and str(tmp_path / "musan" / "noise" / "free-sound") in message
    message = fails("make_noise_list.py", "--musan_root", tmp_path / "musan", "--subsets", "music",
                    "--out_dir", tmp_path / "out")
    assert "subset 'music' not found" in message and "noise/free-sound" in message
    assert not (tmp_path / "out" / "wav.scp").exists()


def test_rir_list_from_the_shared_rirs(tmp_path):
    rir_dir = DATA / "rir"
    run("make_rir_list.py", "--rir_dir", rir_dir, "--out_dir", tmp_path)
    listed = check_list(tmp_path)
    assert len(listed) == len(list(rir_dir.rglob("*.wav"))) == 10
    # 44.1/48 kHz and multi-channel files became 16 kHz mono copies; the first channel is kept
    eight, _ = sf.read(str(rir_dir / "lhotse/test/fixtures/rir/real_8ch.wav"), dtype="float32")
    kept, _ = sf.read(listed["lhotse-test-fixtures-rir-real_8ch"], dtype="float32")
    np.testing.assert_allclose(kept, eight[:, 0], atol=1e-6)
    assert sf.info(listed["audiomentations-demo-ir-rir48000"]).frames == pytest.approx(63145 / 3, abs=1)


def test_keys_come_from_relative_paths_and_stay_unique():
    keys = make_keys([Path("noise/a b/x.wav"), Path("noise/a b/x.flac"), Path("music/y.wav")])
    assert keys[Path("music/y.wav")] == "music-y"
    assert {keys[Path("noise/a b/x.flac")], keys[Path("noise/a b/x.wav")]} == {"noise-a_b-x", "noise-a_b-x-2"}
