"""Pre-training runs that meet faults (issue 9): crash and resume, bad audio, bad configuration, numerics.

Trainings run through ESPnet's real trainer (``AQCSSLTask.main``, in this process unless the test needs a
process of its own: a SIGKILL, or the command-line entry point's stderr) on tiny data dirs built in tmp
from ``../shared/data`` with the tiny config and a few updates. The rules tested here are documented in
:mod:`aqc.espnet.audio_guard`, :mod:`aqc.espnet.training_health`,
:mod:`aqc.espnet.preflight`, :mod:`aqc.checkpoints`.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from aqc import checkpoints
from aqc.checkpoints import CheckpointError
from aqc.cli import EXIT_USER_ERROR, AQCUserError, run_cli
from aqc.espnet import audio_guard, training_health
from aqc.espnet.audio_guard import BadAudioError
from aqc.espnet.training_health import CodebookMonitor, NonFiniteLossError
from aqc.espnet.ssl import AQCSSLTask, ESPnetAQCModel  # imports ESPnet's task modules once (about 15 s)

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TINY_YAML = REPO / "egs" / "TEMPLATE" / "conf" / "pretrain_tiny.yaml"
ENV_NOISE = ("[nltk_data]", "Failed to import Flash Attention")  # import-time chatter of the environment

pytestmark = pytest.mark.skipif(not (DATA / "fsdd").is_dir(), reason=f"test data not found at {DATA}")


# ------------------------------------------------------------------------------------------ data
def _fsdd(n, start=5):
    return sorted(glob.glob(str(DATA / "fsdd" / "recordings" / "*_jackson_*.wav")))[start:start + n]


def _libri(n, last=False):
    files = sorted(glob.glob(str(DATA / "librispeech_unlabeled" / "train-clean-100" / "*" / "*" / "*.flac")))
    return files[-n:] if last else files[:n]


def _write_dir(d: Path, files) -> Path:
    """wav.scp and speech_shape (samples at 16 kHz; 16000 for files that cannot be read)."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "wav.scp", "w") as scp, open(d / "speech_shape", "w") as shape:
        for path in files:
            uid = Path(path).stem
            try:
                info = sf.info(str(path))
                n = math.ceil(info.frames * 16000 / info.samplerate)
            except Exception:  # noqa: BLE001 - missing or garbage files
                n = 16000
            scp.write(f"{uid} {path}\n")
            shape.write(f"{uid} {max(n, 1)}\n")
    return d


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    _write_dir(root / "train", _fsdd(20) + _libri(4))
    _write_dir(root / "dev", _fsdd(4, start=0) + _libri(1, last=True))
    return root


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """One file per bad-input case, made from a real recording."""
    root = tmp_path_factory.mktemp("bad_audio")
    wave, rate = sf.read(_libri(1)[0], dtype="float32")
    wave = wave[:24000]
    files = {}

    def write(name, data, subtype=None, samplerate=16000):
        path = root / f"{name}.wav"
        sf.write(path, data, samplerate, subtype=subtype)
        files[name] = path

    nan = wave.copy()
    nan[100:110] = np.nan
    write("nan_0", nan, "FLOAT")
    inf = wave.copy()
    inf[500] = np.inf
    write("inf_0", inf, "FLOAT")
    write("silent_0", np.zeros_like(wave))
    write("stereo_0", np.stack([wave, 0.5 * wave], axis=1))
    write("short_0", wave[:300])  # below two CNN frames: dropped and counted
    write("maskspan_0", wave[:1500])  # 4 CNN frames: shorter than one 10-frame mask span, still trains
    write("empty_0", np.zeros(0, dtype=np.float32))
    (root / "garbage_0.wav").write_bytes(b"this is not audio " * 50)
    files["garbage_0"] = root / "garbage_0.wav"
    files["missing_0"] = root / "missing_0.wav"
    return files


def _cmd(data: Path, out: Path, *extra: str, dev: Path = None):
    dev = dev or data
    return [
        "--config", str(TINY_YAML),
        "--train_data_path_and_name_and_type", f"{data}/train/wav.scp,speech,sound",
        "--train_shape_file", f"{data}/train/speech_shape",
        "--valid_data_path_and_name_and_type", f"{dev}/dev/wav.scp,speech,sound",
        "--valid_shape_file", f"{dev}/dev/speech_shape",
        "--augmentation_conf", "background_p=0",
        "--collate_fn_conf", "max_sample_size=6000",
        "--batch_size", "4", "--valid_batch_size", "4",
        "--num_workers", "0", "--ngpu", "0", "--seed", "3",
        "--use_tensorboard", "false", "--use_matplotlib", "false", "--log_interval", "2",
        "--output_dir", str(out), *extra,
    ]


def _ckpt(out: Path):
    return torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)


class LossRecorder:
    """Wraps ESPnetAQCModel.forward: records each training loss, checks the inputs are finite, and
    poisons the losses of the given training forwards (1-based) with NaN."""

    def __init__(self, monkeypatch, poison=()):
        self.losses = []
        self.inputs_finite = True
        original = ESPnetAQCModel.forward
        recorder = self
        poison = set(poison)

        def forward(model, *args, **kwargs):
            for key in ("speech", "speech_aug", "speech_teacher"):
                if kwargs.get(key) is not None and not bool(torch.isfinite(kwargs[key]).all()):
                    recorder.inputs_finite = False
            if not model.training:
                return original(model, *args, **kwargs)
            n = len(recorder.losses) + 1
            if n in poison:  # a NaN inside the model: the wrapper sees a non-finite loss
                real = model.aqc.forward

                def nan_forward(*a, **k):
                    loss, stats = real(*a, **k)
                    return loss * float("nan"), stats

                model.aqc.forward = nan_forward
                try:
                    out = original(model, *args, **kwargs)
                finally:
                    del model.aqc.forward
            else:
                out = original(model, *args, **kwargs)
            recorder.losses.append(float(out[0].detach()))
            return out

        monkeypatch.setattr(ESPnetAQCModel, "forward", forward)


def _cli(capsys, cmd):
    """run_cli(AQCSSLTask.main) in this process: (exit code, stderr lines)."""
    with pytest.raises(SystemExit) as info:
        run_cli(AQCSSLTask.main, cmd=cmd)
    err = capsys.readouterr().err
    return info.value.code, [line for line in err.splitlines() if line.strip()]


def _our_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(ENV_NOISE)]


# ================================================================= 1. crash (SIGKILL) and resume
def test_atomic_save_keeps_the_previous_file_when_a_save_dies(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    checkpoints.atomic_save({"epoch": 1}, path)

    def crash(*args):
        raise KeyboardInterrupt("killed between write and rename")

    monkeypatch.setattr(checkpoints.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert (tmp_path / "checkpoint.pth.tmp").is_file()
    # ESPnet's trainer saves through it (and loads without running code) once aqc's plug-ins are imported
    import espnet2.train.trainer as espnet_trainer

    from aqc.espnet.checkpoint_io import _TorchWithSafeCheckpoints

    assert espnet_trainer.torch.save is _TorchWithSafeCheckpoints.save
    assert espnet_trainer.torch.load is _TorchWithSafeCheckpoints.load
    assert espnet_trainer.torch.Tensor is torch.Tensor


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(good, tmp_path, monkeypatch):
    """SIGKILL after 1 iteration of epoch 2; --resume true redoes epoch 2 from the epoch-1 checkpoint and
    gives exactly the uninterrupted run's losses and weights; a half-written checkpoint.pth.tmp is ignored."""
    extra = ("--num_iters_per_epoch", "3", "--max_epoch", "2")
    full = LossRecorder(monkeypatch)
    AQCSSLTask.main(cmd=_cmd(good, tmp_path / "full", *extra))
    full_ckpt = _ckpt(tmp_path / "full")
    full_losses = list(full.losses)
    assert len(full_losses) == 6
    monkeypatch.undo()

    out = tmp_path / "killed"
    # the same thread count as this process, whatever the machine's load (OMP_NUM_THREADS only caps it: a
    # busy machine gave the subprocess fewer threads, and its sums differed in the last bits)
    threads = str(torch.get_num_threads())
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=threads, AQC_NUM_THREADS=threads,
               AQC_TEST_SIGKILL_AT="2:1")
    result = subprocess.run([sys.executable, "-m", "aqc.bin.ssl_train", *_cmd(good, out, *extra)],
                            capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == -9, result.stderr[-3000:]
    assert "SIGKILL at epoch 2 after 1 iteration" in result.stderr, result.stderr[-3000:]
    killed = _ckpt(out)
    assert sorted(killed["reporter"]["stats"]) == [1]  # the last checkpoint is epoch 1's
    assert killed["model"]["aqc._extra_state"]["num_updates"] == 3
    for key, value in full_ckpt["reporter"]["stats"][1]["train"].items():  # the other process agreed so far
        if not key.endswith("time"):
            assert killed["reporter"]["stats"][1]["train"][key] == value, (key, value, killed["reporter"]["stats"])
    # a save that died half-way leaves a truncated .tmp beside the intact checkpoint
    data = (out / "checkpoint.pth").read_bytes()
    (out / "checkpoint.pth.tmp").write_bytes(data[: len(data) // 2])

    resumed = LossRecorder(monkeypatch)
    AQCSSLTask.main(cmd=_cmd(good, out, *extra, "--resume", "true"))
    assert resumed.losses == full_losses[3:], (resumed.losses, full_losses)
    assert not (out / "checkpoint.pth.tmp").exists()
    final = _ckpt(out)
    assert final["model"]["aqc._extra_state"]["num_updates"] == 6
    for key, value in full_ckpt["model"].items():
        other = final["model"][key]
        assert (torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other), key
    for key, value in full_ckpt["reporter"]["stats"][2]["train"].items():
        if not key.endswith("time"):
            assert final["reporter"]["stats"][2]["train"][key] == value, key


@pytest.fixture(scope="module")
def poisoned_run(good, tmp_path_factory):
    """1 epoch of 3 updates whose 2nd loss is NaN, with a codebook warning threshold that always fires."""
    out = tmp_path_factory.mktemp("exp") / "poisoned"
    mp = pytest.MonkeyPatch()
    handler = _ListHandler()
    logging.getLogger().addHandler(handler)
    try:
        recorder = LossRecorder(mp, poison=(2,))
        AQCSSLTask.main(cmd=_cmd(good, out, "--num_iters_per_epoch", "3", "--max_epoch", "1",
                                 "--min_code_perplexity_fraction", "1.0", "--code_perplexity_patience", "2"))
    finally:
        mp.undo()
        logging.getLogger().removeHandler(handler)
    return out, recorder, handler.messages


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_unreadable_checkpoint_stops_resume_with_the_file_and_the_fix(poisoned_run, good, tmp_path, capsys):
    src, _, _ = poisoned_run
    out = tmp_path / "exp"
    shutil.copytree(src, out, symlinks=True)
    data = (out / "checkpoint.pth").read_bytes()
    (out / "checkpoint.pth").write_bytes(data[: len(data) // 3])  # cut short (e.g. a partial copy)
    code, lines = _cli(capsys, _cmd(good, out, "--resume", "true"))
    assert code == 2 and len(lines) < 8, lines
    assert lines[0].startswith("ERROR: ") and str(out / "checkpoint.pth") in lines[0]
    assert "delete" in lines[0] and f"--init_param {out / '1epoch.pth'}" in lines[0]
    assert not any("Traceback" in line for line in lines)


def test_checkpoint_with_a_readable_zip_but_bad_content_is_reported_by_resume(poisoned_run, good, tmp_path):
    src, _, _ = poisoned_run
    out = tmp_path / "exp"
    shutil.copytree(src, out, symlinks=True)
    with zipfile.ZipFile(out / "checkpoint.pth", "w") as z:
        z.writestr("checkpoint/data.pkl", b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="checkpoint.pth cannot be read.*Fix: delete"):
        AQCSSLTask.main(cmd=_cmd(good, out, "--resume", "true", "--max_epoch", "2"))


# ===================================================================================== 2. audio
def test_audio_problem_rules():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(1000).astype(np.float32)
    assert audio_guard.audio_problem(wave) is None
    assert "NaN/Inf" in audio_guard.audio_problem(np.where(np.arange(1000) == 3, np.nan, wave))
    assert "NaN/Inf" in audio_guard.audio_problem(np.where(np.arange(1000) == 3, -np.inf, wave))
    assert "silent" in audio_guard.audio_problem(np.zeros(1000, np.float32))
    assert "silent" in audio_guard.audio_problem(np.full((1000, 2), 0.25, np.float32))
    assert audio_guard.audio_problem(np.zeros(0, np.float32)) is None  # the length rule handles it
    assert audio_guard.is_bad_audio(audio_guard.bad_audio_marker())
    assert not audio_guard.is_bad_audio(np.zeros((0, 2), np.float32))


def test_collate_drops_marked_audio_and_non_finite_augmented_views(caplog):
    from aqc.espnet.collate import AQCCollateFn

    class NaNOnSecond:
        def __init__(self):
            self.calls = 0

        def __call__(self, wave, rng):
            self.calls += 1
            return wave * (np.nan if self.calls == 2 else 2.0)

    fn = AQCCollateFn(train=True, min_sample_size=1000)
    fn.augmentation = NaNOnSecond()
    rng = np.random.default_rng(0)
    items = [(f"u{i}", {"speech": rng.standard_normal(3000).astype(np.float32)}) for i in range(3)]
    items.append(("bad", {"speech": audio_guard.bad_audio_marker()}))
    caplog.set_level(logging.WARNING)
    ids, batch = fn(items)
    assert ids == ["u0", "u2"] and int(batch["bad_audio"]) == 2 and int(batch["dropped_utterances"]) == 0
    assert torch.isfinite(batch["speech"]).all() and torch.isfinite(batch["speech_aug"]).all()
    assert "utterance u1: a view has NaN/Inf samples after augmentation" in caplog.text


def test_unusable_audio_is_skipped_counted_and_named_and_never_reaches_the_model(
        good, bad_files, tmp_path, monkeypatch, caplog):
    """NaN, Inf, all-silent, unreadable and (with --check_audio false) missing files are skipped and
    counted; stereo is down-mixed; too short is dropped; shorter than a mask span trains."""
    data = tmp_path / "data"
    skipped = ["nan_0", "inf_0", "silent_0", "garbage_0", "missing_0"]
    train = _fsdd(8) + _libri(2) + [str(bad_files[k]) for k in skipped + ["stereo_0", "short_0", "maskspan_0"]]
    _write_dir(data / "train", train)
    _write_dir(data / "dev", _fsdd(3, start=0) + [str(bad_files["nan_0"])])
    recorder = LossRecorder(monkeypatch)
    caplog.set_level(logging.WARNING)
    AQCSSLTask.main(cmd=_cmd(data, tmp_path / "exp", "--num_iters_per_epoch", "none", "--max_epoch", "1",
                             "--check_audio", "false", "--collate_fn_conf", "min_sample_size=720"))
    assert recorder.inputs_finite and recorder.losses and all(np.isfinite(recorder.losses))
    text = caplog.text
    for key in skipped:
        assert f"{bad_files[key]} (id {key})" in text, key
    assert "NaN/Inf" in text and "all-silent" in text and "cannot be read" in text
    assert f"{bad_files['missing_0']} (id missing_0): does not exist" in text  # not soundfile's "System error"
    assert "[train] epoch 1: skipped 5 utterance(s) with unusable audio" in text
    assert "dropped 1 utterance(s) shorter than 720 samples" in text
    assert "[valid] epoch 1: skipped 1 utterance(s) with unusable audio" in text
    stats = _ckpt(tmp_path / "exp")["reporter"]["stats"][1]
    assert stats["train"]["nonfinite_skipped"] == 0 and np.isfinite(stats["valid"]["loss"])


def test_an_epoch_without_usable_audio_stops_the_run(bad_files, tmp_path):
    data = tmp_path / "data"
    _write_dir(data / "train", [str(bad_files[k]) for k in ("nan_0", "silent_0", "inf_0")])
    _write_dir(data / "dev", [str(bad_files["nan_0"])])
    with pytest.raises(AQCUserError, match="no usable batch.*skipped 3 utterance"):
        AQCSSLTask.main(cmd=_cmd(data, tmp_path / "exp", "--num_iters_per_epoch", "none", "--max_epoch", "1"))
    assert not (tmp_path / "exp" / "checkpoint.pth").exists()


def test_missing_empty_unreadable_and_other_rate_files_are_rejected_before_training(good, bad_files, tmp_path):
    data = tmp_path / "data"
    rejected = ["missing_0", "empty_0", "garbage_0"]
    _write_dir(data / "train", _libri(3) + [str(bad_files[k]) for k in rejected] + _fsdd(2))
    shutil.copytree(good / "dev", data / "dev")
    with pytest.raises(BadAudioError) as info:
        AQCSSLTask.main(cmd=_cmd(data, tmp_path / "exp", "--resample", "false"))
    message = str(info.value)
    for key in rejected:
        assert f"{key} {bad_files[key]}" in message, key
    assert "does not exist" in message and "zero samples" in message and "cannot be read as audio" in message
    assert "at 8000 Hz, the model takes 16000 Hz" in message  # the 8 kHz files: train and dev, one line
    assert "9 audio file(s) cannot be used" in message  # 3 bad + 2 train and 4 dev files at 8 kHz
    assert not (tmp_path / "exp").exists()  # stopped before ESPnet started


@pytest.mark.slow
def test_cli_names_every_rejected_file_in_a_short_stderr(good, bad_files, tmp_path):
    data = tmp_path / "data"
    rejected = ["missing_0", "empty_0", "garbage_0"]
    _write_dir(data / "train", _libri(3) + [str(bad_files[k]) for k in rejected])
    _write_dir(data / "dev", _libri(1, last=True))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "aqc.bin.ssl_train", *_cmd(data, tmp_path / "exp")],
                            capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = _our_lines(result.stderr)
    assert len(lines) < 15 and "Traceback" not in result.stderr, result.stderr
    assert lines[0] == "ERROR: 3 audio file(s) cannot be used; training did not start:"
    for key in rejected:
        assert any(str(bad_files[key]) in line for line in lines), key


# ============================================================================= 3. configuration
@pytest.mark.parametrize("option, value, expected", [
    ("--model_conf", "mask_lenght=10", "unknown option(s) ['mask_lenght']"),
    ("--augmentation_conf", "gausian_p=0.5", "gausian_p"),
    ("--collate_fn_conf", "max_samples=100", "collate_fn_conf: unknown option(s) ['max_samples']"),
])
def test_unknown_keys_give_one_error_naming_the_key(good, tmp_path, capsys, option, value, expected):
    code, lines = _cli(capsys, _cmd(good, tmp_path / "exp", option, value))
    assert code == 2 and lines[0].startswith("ERROR: ") and expected in lines[0], lines
    assert len(lines) < 5 and not any("Traceback" in line for line in lines)


def test_noise_list_missing_or_empty_is_a_clear_error(good, tmp_path, capsys):
    """A MUSAN root without noise files gives an empty list (or none): background noise cannot work."""
    empty = tmp_path / "musan_noise" / "wav.scp"
    empty.parent.mkdir()
    empty.write_text("")
    for scp, expected in ((empty, "no usable entries"), (tmp_path / "none" / "wav.scp", "not found")):
        code, lines = _cli(capsys, _cmd(good, tmp_path / "exp", "--augmentation_conf", f"noise_scp={scp}",
                                        "--augmentation_conf", "background_p=0.8"))
        assert code == 2 and str(scp) in lines[0] and expected in lines[0], lines
        assert "make_noise_list.py" in lines[0] and len(lines) < 5


def test_missing_required_noise_list_is_named(good, tmp_path, capsys):
    code, lines = _cli(capsys, _cmd(good, tmp_path / "exp", "--augmentation_conf", "background_p=0.8"))
    assert code == 2 and "noise_scp" in lines[0], lines


def test_checkpoint_of_another_architecture_is_refused_on_resume_and_init_param(poisoned_run, good, tmp_path):
    src, _, _ = poisoned_run
    other = ("--model_conf", "num_layers=2", "--model_conf", "top_k_layers=2")
    out = tmp_path / "resumed"
    shutil.copytree(src, out, symlinks=True)
    # --resume: the run's config.yaml says otherwise; stop before ESPnet overwrites it
    before = (out / "config.yaml").read_text()
    with pytest.raises(CheckpointError, match=r"model_conf differs from .*config.yaml \(num_layers: 4 -> 2\)"):
        AQCSSLTask.main(cmd=_cmd(good, out, *other, "--resume", "true", "--max_epoch", "2"))
    assert (out / "config.yaml").read_text() == before
    # the weights themselves (e.g. config.yaml edited by hand): ESPnet's resume, summarised
    (out / "config.yaml").unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint.pth: the weights do not fit the model \(\d+ unexpected "
                                              r"key\(s\).*different architecture"):
        AQCSSLTask.main(cmd=_cmd(good, out, *other, "--resume", "true", "--max_epoch", "2"))
    with pytest.raises(CheckpointError, match=r"1epoch.pth: the weights do not fit the model .*different architecture"):
        AQCSSLTask.main(cmd=_cmd(good, tmp_path / "init", *other, "--init_param", str(src / "1epoch.pth")))
    with pytest.raises(CheckpointError, match=r"--init_param .*nowhere.pth does not exist"):
        AQCSSLTask.main(cmd=_cmd(good, tmp_path / "init2", "--init_param", str(tmp_path / "nowhere.pth")))


def test_state_dict_walls_become_one_line(tmp_path, capsys):
    """A decode with a token list of another size (ESPnet loads the model with load_state_dict) and a
    checkpoint of another architecture: PyTorch's multi-line wall becomes one line through run_cli."""

    class CTC(torch.nn.Module):
        def __init__(self, vocab):
            super().__init__()
            self.ctc_lo = torch.nn.Linear(8, vocab)

    class ASR(torch.nn.Module):
        def __init__(self, vocab, layers=1):
            super().__init__()
            self.encoder = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(layers)])
            self.ctc = CTC(vocab)

    def decode():
        ASR(31).load_state_dict(ASR(30).state_dict())

    with pytest.raises(SystemExit) as info:
        run_cli(decode)
    lines = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 2, lines
    assert "trained with 30 output tokens but this token list gives 31" in lines[0]
    assert "token_list in the experiment's config.yaml" in lines[0]

    with pytest.raises(SystemExit):
        run_cli(lambda: ASR(30, layers=1).load_state_dict(ASR(31, layers=3).state_dict()))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "different architecture" in lines[0] and "4 unexpected key(s)" in lines[0], lines

    # aqc's own loader (export_model, the ASR frontend) wraps the same wall in a ValueError naming the file
    from aqc.models import Data2VecAQC
    from aqc.models.io import config_from_model_conf, load_model_file

    tiny = config_from_model_conf({"preset": "tiny"})
    two_layers = config_from_model_conf({"preset": "tiny", "num_layers": 2, "top_k_layers": 2})
    path = tmp_path / "aqc_model.pt"
    torch.save({"format": "aqc-model", "version": 1, "config": two_layers.to_dict(),
                "state_dict": Data2VecAQC(tiny).state_dict()}, path)
    with pytest.raises(SystemExit):
        run_cli(load_model_file, path)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"ERROR: {path}: weights do not fit"), lines
    assert "the weights do not fit the model" in lines[0] and "different architecture" in lines[0]


def test_run_cli_unknown_frontend_option_worker_errors_and_debug(monkeypatch, capsys):
    from aqc.espnet.frontend import AQCFrontend

    with pytest.raises(SystemExit) as info:
        run_cli(AQCFrontend, upstream_conf={"preset": "tiny"}, mask_lenght=3)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "unknown option 'mask_lenght' for AQCFrontend" in err

    def from_worker():  # what DataLoader re-raises for an exception in a worker
        raise ValueError("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                         "call last):\n  File \"x.py\", line 1, in f\nValueError: /data/a.wav: sample rate 8000 Hz")

    with pytest.raises(SystemExit):
        run_cli(from_worker)
    assert capsys.readouterr().err.splitlines()[0] == "ERROR: /data/a.wav: sample rate 8000 Hz"

    monkeypatch.setenv("AQC_DEBUG", "1")
    with pytest.raises(ValueError, match="sample rate"):
        run_cli(from_worker)
    monkeypatch.delenv("AQC_DEBUG")
    with pytest.raises(ZeroDivisionError):  # not a user error: a bug keeps its traceback
        run_cli(lambda: 1 / 0)


@pytest.mark.slow
def test_cli_unknown_model_conf_key_short_stderr(good, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "aqc.bin.ssl_train", *_cmd(good, tmp_path / "exp", "--model_conf", "mask_lenght=3")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = _our_lines(result.stderr)
    assert len(lines) < 15 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("ERROR: ") and "mask_lenght" in lines[0]
    assert "AQC_DEBUG=1" in lines[-1]


# ================================================================================== 4. numerics
def test_nonfinite_loss_skips_the_update_and_is_counted(poisoned_run):
    out, recorder, messages = poisoned_run
    assert len(recorder.losses) == 3 and math.isnan(recorder.losses[1])
    ckpt = _ckpt(out)
    assert ckpt["model"]["aqc._extra_state"]["num_updates"] == 2  # the teacher did not move
    assert {int(s["step"]) for s in ckpt["optimizers"][0]["state"].values()} == {2}
    train = ckpt["reporter"]["stats"][1]["train"]
    assert train["nonfinite_skipped"] == 1 and np.isfinite(train["loss"])
    assert any("iteration 2: update skipped (non-finite loss); 1 skipped in this epoch" in m for m in messages)


def test_nonfinite_losses_in_a_row_stop_the_run_with_advice(good, tmp_path, monkeypatch, capsys):
    recorder = LossRecorder(monkeypatch, poison=range(2, 100))
    code, lines = _cli(capsys, _cmd(good, tmp_path / "exp", "--num_iters_per_epoch", "6", "--max_epoch", "1",
                                    "--max_nonfinite_in_a_row", "3"))
    assert code == 2 and len(recorder.losses) == 4, recorder.losses  # 1 update, then 3 skipped
    error = [line for line in lines if line.startswith("ERROR: ")]
    assert len(error) == 1 and not any("Traceback" in line for line in lines)
    for advice in ("3 updates in a row", "lower the learning rate", "grad_clip", "NaN/Inf audio", "--use_amp false"):
        assert advice in error[0], advice
    assert not (tmp_path / "exp" / "checkpoint.pth").exists()


def test_update_monitor_counts_skips_per_accumulation_group():
    class Model:
        num_updates = 0

    health = training_health.TrainingHealth(max_nonfinite_in_a_row=2)
    model = Model()
    monitor = training_health.UpdateMonitor(range(8), model, health, accum_grad=2, epoch=1)
    it = iter(monitor)
    for i in range(4):  # group 1 (batches 0, 1) steps; group 2 (2, 3) is skipped for a non-finite loss
        next(it)
        if i == 1:
            model.num_updates += 1
        if i == 2:
            health.nonfinite_losses += 1
    next(it)  # settles group 2
    assert health.skipped_in_epoch == 1 and health.in_a_row == 1
    next(it)  # group 3 (batches 4, 5) is skipped for a non-finite gradient (no AMP): counts toward the stop
    with pytest.raises(NonFiniteLossError, match="2 updates in a row"):
        next(it)
    # with AMP, a gradient overflow under a finite loss is counted but is not a reason to stop
    health = training_health.TrainingHealth(max_nonfinite_in_a_row=1)
    assert list(training_health.UpdateMonitor(range(4), Model(), health, 1, 1, amp=True)) == [0, 1, 2, 3]
    assert health.skipped_in_epoch == 4 and health.in_a_row == 0


def test_collapse_stops_through_the_trainer_with_a_clear_message(good, tmp_path, capsys):
    code, lines = _cli(capsys, _cmd(good, tmp_path / "exp", "--num_iters_per_epoch", "2", "--max_epoch", "1",
                                    "--model_conf", "min_target_std=1000", "--model_conf", "collapse_check_after=0"))
    assert code == 2 and not any("Traceback" in line for line in lines)
    error = [line for line in lines if line.startswith("ERROR: ")]
    assert len(error) == 1 and "teacher targets collapsed at update 1" in error[0]  # checked once > 0
    assert "Lower the learning rate" in error[0]


def test_codebook_monitor_warns_after_patience_once_per_episode(caplog):
    monitor = CodebookMonitor(min_fraction=0.02, patience=3)
    caplog.set_level(logging.WARNING)
    assert [monitor.check(p, 128) for p in (2.0, 2.1, 1.9, 2.0, 2.0)] == [False, False, True, False, False]
    assert monitor.check(30.0, 128) is False  # recovered
    assert [monitor.check(1.5, 128) for _ in range(3)] == [False, False, True]
    assert monitor.warnings == 2
    assert "code perplexity 1.50 < 2.56" in caplog.text and "diversity_weight" in caplog.text
    assert CodebookMonitor(min_fraction=0.0, patience=3).check(0.0, 128) is False


def test_codebook_warning_through_the_trainer(poisoned_run):
    _, _, messages = poisoned_run
    warnings = [m for m in messages if m.startswith("codebook collapse?")]
    assert warnings and "of the 128 codes" in warnings[0] and "lower the learning rate" in warnings[0]


def test_export_model_random_init_from_config_and_user_errors(tmp_path, capsys):
    """The "no pre-training" baseline takes the pre-training config's whole model_conf (lists too)."""
    from aqc.bin import export_model
    from aqc.models.io import load_model_file

    conf = tmp_path / "pretrain.yaml"
    conf.write_text("model_conf:\n  preset: tiny\n  conv_layers: [[32, 10, 5], [32, 3, 2], [32, 2, 2]]\n"
                    "  num_layers: 2\n  top_k_layers: 2\n")
    out = tmp_path / "random.pt"
    assert export_model.main(["--random_init", "true", "--config", str(conf), "--model_conf", "layerdrop=0.2",
                              "--output", str(out)]) == 0
    model = load_model_file(out)
    assert model.config.conv_layers == [(32, 10, 5), (32, 3, 2), (32, 2, 2)]
    assert model.config.num_layers == 2 and model.config.layerdrop == 0.2 and model.num_updates == 0
    capsys.readouterr()
    for argv, expected in ((["--ssl_exp", str(tmp_path / "no_such_exp")], "no_such_exp"),
                           (["--random_init", "true", "--config", str(tmp_path / "gone.yaml")], "gone.yaml"),
                           (["--random_init", "true", "--model_conf", "num_layerz=2"], "num_layerz")):
        with pytest.raises(SystemExit) as info:
            export_model.main([*argv, "--output", str(tmp_path / "x.pt")])
        assert info.value.code == EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.startswith("ERROR: ") and expected in err, err
    assert not (tmp_path / "x.pt").exists()


# ================================================================ 5. saves, exports, GPUs, types
def test_a_full_disk_while_saving_says_so_and_keeps_the_previous_file(tmp_path):
    """/dev/full fails every write with ENOSPC, as a full disk does; PyTorch's zip writer reports it only
    as a C++ "iostream error"."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    path = tmp_path / "checkpoint.pth"
    checkpoints.atomic_save({"epoch": 1}, path)
    (tmp_path / "checkpoint.pth.tmp").symlink_to("/dev/full")
    with pytest.raises(checkpoints.DiskFullError) as info:
        checkpoints.atomic_save({"epoch": 2, "weights": torch.zeros(100_000)}, path)
    message = str(info.value)
    assert message.startswith(f"no space left on {tmp_path.resolve()} while saving checkpoint.pth")
    assert "previous checkpoint.pth is intact" in message and "--resume true" in message
    assert checkpoints.load_checkpoint(path) == {"epoch": 1}
    assert not (tmp_path / "checkpoint.pth.tmp").exists()  # the partial file is gone
    # anything else that fails a save is not mistaken for a full disk
    with pytest.raises(RuntimeError):
        checkpoints.atomic_save({"x": 1}, tmp_path / "no_such_dir" / "model.pth")


@pytest.mark.slow
def test_a_full_disk_during_training_is_one_line(good, tmp_path, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    out = tmp_path / "exp"
    out.mkdir()
    (out / "checkpoint.pth.tmp").symlink_to("/dev/full")  # the end-of-epoch checkpoint hits a full disk
    code, lines = _cli(capsys, _cmd(good, out, "--num_iters_per_epoch", "2", "--max_epoch", "1"))
    ours = [line for line in lines if not line.startswith(sys.executable)]  # ESPnet echoes its command line
    assert code == 2 and len(ours) == 2, lines
    assert ours[0].startswith(f"ERROR: no space left on {out.resolve()} while saving checkpoint.pth"), lines
    assert not any("iostream" in line for line in lines)


def test_ngpu_without_a_gpu_is_one_line(good, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, lines = _cli(capsys, _cmd(good, tmp_path / "exp", "--ngpu", "1"))
    assert code == 2 and lines[0].startswith("ERROR: --ngpu 1, but PyTorch sees no GPU"), lines
    assert "Fix: --ngpu 0 runs on the CPU" in lines[0] and len(lines) == 2
    assert not (tmp_path / "exp").exists()


def _config_with(tmp_path: Path, section: str, key: str, value) -> Path:
    import yaml

    conf = yaml.safe_load(TINY_YAML.read_text())
    conf.setdefault(section, {})[key] = value
    path = tmp_path / f"pretrain_{section}_{key}.yaml"
    path.write_text(yaml.safe_dump(conf))
    return path


@pytest.mark.parametrize("section, key, value, takes", [
    ("optim_conf", "lr", "fast", "a number"),
    ("scheduler_conf", "max_steps", [4], "a number"),
    ("model_conf", "mask_prob", "high", "a number"),
    ("model_conf", "use_quantizer", "yes", "true or false"),
])
def test_a_config_value_of_the_wrong_type_names_the_key_and_the_file(good, tmp_path, capsys, section, key, value,
                                                                      takes):
    config = _config_with(tmp_path, section, key, value)
    cmd = _cmd(good, tmp_path / "exp")
    cmd[cmd.index("--config") + 1] = str(config)
    code, lines = _cli(capsys, cmd)
    assert code == 2 and len(lines) == 2, lines
    assert lines[0].startswith(f"ERROR: {config}: {section}.{key} is {value!r}"), lines
    assert f"takes {takes}" in lines[0] and "Fix: give" in lines[0]


def test_conf_types_on_the_command_line_and_numbers_written_as_text(good, tmp_path, capsys):
    from aqc.espnet.preflight import check_conf_types

    code, lines = _cli(capsys, _cmd(good, tmp_path / "exp", "--optim_conf", "lr=fast"))
    assert code == 2 and "the command line (--optim_conf): optim_conf.lr is 'fast'" in lines[0], lines
    # YAML 1.1 reads 1e-3 as text: taken as the number it means
    config = _config_with(tmp_path, "optim_conf", "lr", "1e-3")
    cmd = _cmd(good, tmp_path / "exp")
    cmd[cmd.index("--config") + 1] = str(config)
    args = AQCSSLTask.get_parser().parse_args(cmd)
    assert args.optim_conf["lr"] == "1e-3"
    check_conf_types(AQCSSLTask, args)
    assert args.optim_conf["lr"] == 0.001


def test_export_of_a_truncated_epoch_file_names_what_can_be_used(poisoned_run, tmp_path, capsys):
    """latest.pth -> 1epoch.pth cut short: export_model says which files are readable; ESPnet's
    checkpoint.pth (the model beside the optimizer state) exports the same weights."""
    from aqc.bin import export_model
    from aqc.models.io import load_model_file

    src, _, _ = poisoned_run
    exp = tmp_path / "exp"
    shutil.copytree(src, exp, symlinks=True)
    intact = load_model_file(exp / "1epoch.pth").state_dict()
    data = (exp / "1epoch.pth").read_bytes()
    (exp / "1epoch.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as info:
        export_model.main(["--ssl_exp", str(exp), "--output", str(tmp_path / "m.pt")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert info.value.code == 2 and len(lines) == 2, lines
    assert lines[0].startswith(f"ERROR: {exp / '1epoch.pth'} cannot be read"), lines
    assert f"Fix: use another model file, e.g. {exp / 'checkpoint.pth'}" in lines[0]
    assert export_model.main(["--ssl_exp", str(exp), "--checkpoint", str(exp / "checkpoint.pth"),
                              "--output", str(tmp_path / "m.pt")]) == 0
    exported = load_model_file(tmp_path / "m.pt").state_dict()
    assert exported.keys() == intact.keys()
    assert all(torch.equal(exported[k], intact[k]) for k in intact if isinstance(intact[k], torch.Tensor))
