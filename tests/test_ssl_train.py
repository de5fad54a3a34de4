"""aqc's ESPnet SSL task (issue 4): pre-training through ESPnet's own trainer.

Trainings run in this process (``AQCSSLTask.main(cmd=...)``, ESPnet imported once) on tiny data dirs built
in tmp from ``../shared/data`` (FSDD 8 kHz, resampled on the fly, and LibriSpeech 16 kHz), with
the tiny config and a few updates. The 2-process run uses torchrun (gloo); the checkpoint is loaded in
a fresh process.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from aqc.espnet import ssl as aqc_ssl  # imports ESPnet's task modules once (about 15 s)
from aqc.espnet.collate import AQCCollateFn, SampleRateGuard, min_samples_for
from aqc.espnet.ssl import AQCSSLTask, ESPnetAQCModel, model_fingerprints
from aqc.models.quantizer import gumbel_temperature_at
from aqc.models.teacher import ema_decay_at

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TINY_YAML = REPO / "egs" / "TEMPLATE" / "conf" / "pretrain_tiny.yaml"
BASE_YAML = REPO / "egs" / "TEMPLATE" / "conf" / "pretrain_base.yaml"

pytestmark = pytest.mark.skipif(not (DATA / "fsdd").is_dir(), reason=f"test data not found at {DATA}")


# ------------------------------------------------------------------------------------------ data
def _write_dir(d: Path, files) -> None:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "wav.scp", "w") as scp, open(d / "speech_shape", "w") as shape:
        for path in files:
            info = sf.info(str(path))
            uid = Path(path).stem
            scp.write(f"{uid} {path}\n")
            shape.write(f"{uid} {math.ceil(info.frames * 16000 / info.samplerate)}\n")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl_data")
    fsdd = sorted(glob.glob(str(DATA / "fsdd" / "recordings" / "*_jackson_*.wav")))
    libri = sorted(glob.glob(str(DATA / "librispeech_unlabeled" / "train-clean-100" / "*" / "*" / "*.flac")))
    train = fsdd[5:25] + libri[:4]
    # a stereo file (down-mixed by the collate) and a too-short one (dropped by the collate)
    wave, rate = sf.read(fsdd[30], dtype="float32")
    sf.write(root / "stereo_0.wav", np.stack([wave, 0.5 * wave], axis=1), rate)
    sf.write(root / "short_0.wav", wave[:200], rate)
    train += [str(root / "stereo_0.wav"), str(root / "short_0.wav")]
    _write_dir(root / "train", train)
    _write_dir(root / "dev", fsdd[:4] + libri[-1:])
    noise = root / "noise"
    noise.mkdir()
    with open(noise / "wav.scp", "w") as f:
        for p in sorted(glob.glob(str(DATA / "musan" / "noise" / "free-sound" / "*.wav")))[:3]:
            f.write(f"{Path(p).stem} {p}\n")
    return root


def _cmd(data: Path, out: Path, *extra: str):
    return [
        "--config", str(TINY_YAML),
        "--train_data_path_and_name_and_type", f"{data}/train/wav.scp,speech,sound",
        "--train_shape_file", f"{data}/train/speech_shape",
        "--valid_data_path_and_name_and_type", f"{data}/dev/wav.scp,speech,sound",
        "--valid_shape_file", f"{data}/dev/speech_shape",
        "--augmentation_conf", f"noise_scp={data}/noise/wav.scp",
        "--collate_fn_conf", "max_sample_size=6000",
        "--batch_size", "4", "--valid_batch_size", "4",
        "--num_workers", "0", "--ngpu", "0", "--seed", "3",
        "--use_tensorboard", "false", "--use_matplotlib", "false", "--log_interval", "2",
        "--output_dir", str(out), *extra,
    ]


class LossRecorder:
    """Wraps ESPnetAQCModel.forward to record each training forward's loss (optionally poisoning one)."""

    def __init__(self, monkeypatch, nan_at=None):
        self.losses = []
        self.nan_at = nan_at
        original = ESPnetAQCModel.forward
        recorder = self

        def forward(model, *args, **kwargs):
            loss, stats, weight = original(model, *args, **kwargs)
            if model.training:
                recorder.losses.append(float(loss.detach()))
                if recorder.nan_at is not None and len(recorder.losses) == recorder.nan_at:
                    loss = loss * float("nan")
            return loss, stats, weight

        monkeypatch.setattr(ESPnetAQCModel, "forward", forward)


def _train(data, out, *extra):
    AQCSSLTask.main(cmd=_cmd(data, out, *extra))
    return torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def accum_run(data_dirs, tmp_path_factory):
    """6 mini-batches with accum_grad 2: 3 optimizer updates. One epoch of --plot_every_epochs 4: the
    images are drawn when training ends."""
    out = tmp_path_factory.mktemp("exp") / "accum"
    ckpt = _train(data_dirs, out, "--accum_grad", "2", "--num_iters_per_epoch", "6", "--max_epoch", "1",
                  "--use_matplotlib", "true", "--use_tensorboard", "true", "--plot_every_epochs", "4")
    return out, ckpt


# ---------------------------------------------------------------------------------- trainer runs
def test_teacher_updates_once_per_optimizer_step_with_accum_grad(accum_run):
    out, ckpt = accum_run
    model_state, optim_state, sched_state = ckpt["model"], ckpt["optimizers"][0], ckpt["schedulers"][0]
    steps = {int(s["step"]) for s in optim_state["state"].values()}
    assert steps == {3}, steps  # 6 mini-batches / accum_grad 2
    assert model_state["aqc._extra_state"]["num_updates"] == 3
    assert sched_state["last_epoch"] == 3
    # every named scalar of the model reaches ESPnet's reporter, its log, plots (drawn after the last
    # epoch, though not a 4th) and tensorboard
    train_stats = ckpt["reporter"]["stats"][1]["train"]
    for key in ("loss", "regression", "contrastive_student", "contrastive_teacher", "diversity",
                "feature_penalty", "code_perplexity", "prob_perplexity", "gumbel_temperature", "ema_decay",
                "target_std", "prediction_std", "masked_frames"):
        assert np.isfinite(train_stats[key]), key
        assert (out / "images" / f"{key}.png").is_file(), key
    assert "loss" in ckpt["reporter"]["stats"][1]["valid"]
    # the thread count the updates ran with (fixed in this test process: conftest), for aqc.results
    assert train_stats["intra_op_threads"] == torch.get_num_threads()
    assert list((out / "tensorboard" / "train").glob("events.out.tfevents.*"))
    # the teacher moved away from its initial copy but is not the student
    teacher = {k[len("aqc.teacher.encoder."):]: v for k, v in model_state.items()
               if k.startswith("aqc.teacher.encoder.")}
    student = {k[len("aqc.encoder."):]: v for k, v in model_state.items() if k.startswith("aqc.encoder.")}
    assert teacher.keys() == student.keys()
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher if not k.startswith("pos_conv."))


def test_skipped_update_is_not_counted(data_dirs, tmp_path, monkeypatch):
    """ESPnet skips optimizer.step on a non-finite gradient: the teacher must not move then."""
    recorder = LossRecorder(monkeypatch, nan_at=2)
    ckpt = _train(data_dirs, tmp_path / "nan", "--num_iters_per_epoch", "4", "--max_epoch", "1")
    assert len(recorder.losses) == 4
    assert ckpt["model"]["aqc._extra_state"]["num_updates"] == 3
    assert {int(s["step"]) for s in ckpt["optimizers"][0]["state"].values()} == {3}


@pytest.mark.slow
def test_resume_continues_exactly(data_dirs, tmp_path, monkeypatch):
    """Stop after 3 updates, resume with --resume true: the next updates equal an uninterrupted run's."""
    extra = ("--num_iters_per_epoch", "3")
    full = LossRecorder(monkeypatch)
    ckpt_full = _train(data_dirs, tmp_path / "full", *extra, "--max_epoch", "2", "--keep_nbest_models", "2")
    full_losses = list(full.losses)

    first = LossRecorder(monkeypatch)
    _train(data_dirs, tmp_path / "split", *extra, "--max_epoch", "1")
    assert first.losses == full_losses[:3]
    second = LossRecorder(monkeypatch)
    ckpt_resumed = _train(data_dirs, tmp_path / "split", *extra, "--max_epoch", "2", "--resume", "true")
    assert len(second.losses) == 3
    assert second.losses == full_losses[3:]

    assert ckpt_resumed["model"]["aqc._extra_state"]["num_updates"] == 6
    for key, value in ckpt_full["model"].items():
        other = ckpt_resumed["model"][key]
        assert (torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other), key
    # ESPnet averages the 2 best checkpoints at the end (aqc keeps the update count of the best one)
    averaged = torch.load(tmp_path / "full" / "valid.loss.ave_2best.pth", map_location="cpu", weights_only=False)
    assert averaged["aqc._extra_state"]["num_updates"] in (3, 6)
    epochs = [torch.load(tmp_path / "full" / f"{e}epoch.pth", map_location="cpu", weights_only=False)
              for e in (1, 2)]
    key = "aqc.teacher.encoder.layer_norm.weight"
    assert torch.allclose(averaged[key], (epochs[0][key] + epochs[1][key]) / 2)
    full_stats, resumed_stats = (c["reporter"]["stats"][2]["train"] for c in (ckpt_full, ckpt_resumed))
    for key, value in full_stats.items():
        if not key.endswith("time"):
            assert resumed_stats[key] == value, key


def test_checkpoint_loads_in_fresh_process(accum_run):
    """The epoch checkpoint holds the teacher, the update count and so the schedules; load_model_file
    rebuilds the model from it and the experiment's config.yaml in a new process."""
    out, ckpt = accum_run
    state = torch.load(out / "1epoch.pth", map_location="cpu", weights_only=False)
    assert any(k.startswith("aqc.teacher.encoder.") for k in state)
    assert state["aqc._extra_state"] == {"num_updates": 3}
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "aqc" and config["model_conf"]["preset"] == "tiny"

    model = ESPnetAQCModel(**config["model_conf"])
    model.load_state_dict(state)
    expected = model_fingerprints(model)
    code = (  # no ESPnet in the fresh process: aqc.models only
        "import hashlib, json, sys\n"
        "from aqc.models.io import load_model_file\n"
        "m = load_model_file(sys.argv[1])\n"
        "h = hashlib.sha256()\n"
        "sd = m.state_dict()\n"
        "for n in sorted(k for k in sd if k.startswith('teacher.')):\n"
        "    h.update(n.encode()); h.update(sd[n].contiguous().numpy().tobytes())\n"
        "print(json.dumps({'num_updates': m.num_updates, 'temperature': m.quantizer.temperature,\n"
        "                  'ema_decay': m.ema_decay, 'teacher': h.hexdigest()}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-c", code, str(out / "1epoch.pth")], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["num_updates"] == 3
    assert loaded["teacher"] == expected["teacher"]
    c = model.aqc.config
    assert loaded["temperature"] == pytest.approx(gumbel_temperature_at(3, c.latent_temp))
    assert loaded["ema_decay"] == pytest.approx(ema_decay_at(3, c.ema_decay, c.ema_end_decay,
                                                             c.ema_anneal_end_step))


@pytest.mark.slow
def _labelled_digits(d: Path, takes) -> Path:
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    d.mkdir(parents=True)
    with open(d / "wav.scp", "w") as scp, open(d / "text", "w") as text:
        for digit in range(10):
            for take in takes:
                scp.write(f"d{digit}_{take} {DATA / 'fsdd' / 'recordings' / f'{digit}_lucas_{take}.wav'}\n")
                text.write(f"d{digit}_{take} {words[digit]}\n")
    return d


def test_two_process_gloo_run_keeps_ranks_identical(data_dirs, tmp_path):
    """Two CPU ranks, with the probe after each epoch on rank 0 while rank 1 waits (issue 17)."""
    out = tmp_path / "ddp"
    probe_train = _labelled_digits(tmp_path / "probe_train", range(5, 9))
    probe_dev = _labelled_digits(tmp_path / "probe_dev", range(0, 3))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "aqc.bin.ssl_train",
           *_cmd(data_dirs, out, "--num_iters_per_epoch", "2", "--max_epoch", "2", "--dist_backend", "gloo",
                 "--probe_train_data", str(probe_train), "--probe_dev_data", str(probe_dev))]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads((out / "rank_consistency.json").read_text())
    assert report["epoch"] == 2
    ranks = report["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["student"] == ranks[1]["student"]
    assert ranks[0]["teacher"] == ranks[1]["teacher"]
    assert ranks[0]["num_updates"] == ranks[1]["num_updates"] == 4
    # the batch of the run, said once (rank 0) in the training log
    said = [line for line in result.stderr.splitlines() if "global batch:" in line]
    assert len(said) == 1 and said[0].endswith("global batch: set by hand: batch_size 4 utterances (sorted) x "
                                               "accum_grad 1 = 4 utterances per update, split over 2 rank(s); 2 "
                                               "updates per epoch x 2 epochs = 4 updates"), said
    # the fingerprints are those of the weights rank 0 saved
    config = yaml.safe_load((out / "config.yaml").read_text())
    model = ESPnetAQCModel(**config["model_conf"])
    model.load_state_dict(torch.load(out / "2epoch.pth", map_location="cpu", weights_only=False))
    saved = model_fingerprints(model)
    assert saved["student"] == ranks[0]["student"] and saved["teacher"] == ranks[0]["teacher"]
    # the probe ran after each epoch, once (rank 0), and the epoch-2 check came after the first probe
    scores = [json.loads(line) for line in (out / "probe" / "scores.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["num_updates"], r["train_utterances"], r["dev_utterances"]) for r in scores] == \
        [(1, 2, 40, 30), (2, 4, 40, 30)]
    assert all(r["task"] == "classify" and 0.0 <= r["best_error"] <= 1.0 for r in scores)
    probed = [line for line in result.stderr.splitlines() if "probe, epoch" in line]
    assert len(probed) == 2, probed
    assert config["best_model_criterion"][-1] == ["valid", "probe_err", "min"]
    assert (out / "valid.probe_err.best.pth").exists()


def test_probe_every_few_epochs_never_picks_an_unprobed_epoch(data_dirs, tmp_path):
    """probe_conf every_epochs 2 over 3 epochs probes after epochs 2 and 3 only; the epochs between probes
    must neither stop the run (ESPnet's criterion reads probe_err in every epoch) nor count as the best."""
    out = tmp_path / "every2"
    probe_train = _labelled_digits(tmp_path / "probe_train", range(5, 9))
    probe_dev = _labelled_digits(tmp_path / "probe_dev", range(0, 3))
    cmd = [sys.executable, "-m", "aqc.bin.ssl_train",
           *_cmd(data_dirs, out, "--num_iters_per_epoch", "1", "--max_epoch", "3", "--probe_train_data",
                 str(probe_train), "--probe_dev_data", str(probe_dev), "--probe_conf", "every_epochs=2",
                 "--keep_nbest_models", "1")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-5000:]
    scores = [json.loads(line) for line in (out / "probe" / "scores.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in scores] == [2, 3]
    best = min(scores, key=lambda r: (r["best_error"], r["epoch"]))["epoch"]
    assert os.readlink(out / "valid.probe_err.best.pth") == f"{best}epoch.pth"
    assert "probe_err=inf" in result.stderr  # epoch 1's log line says it was not probed


def test_continued_pretraining_from_a_hugging_face_folder(data_dirs, tmp_path):
    """--init_upstream through the command line: the run starts from the folder's weights and trains."""
    from aqc.interop import export_hf
    from aqc.models import data2vec_aqc_tiny

    torch.manual_seed(9)
    released = data2vec_aqc_tiny()
    folder = export_hf(released, tmp_path / "hf")
    out = tmp_path / "continued"
    cmd = [sys.executable, "-m", "aqc.bin.ssl_train",
           *_cmd(data_dirs, out, "--num_iters_per_epoch", "2", "--max_epoch", "1", "--init_upstream", str(folder))]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO)))
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"continued pre-training from {folder}" in result.stderr
    assert "teacher: a copy of the student (the file has no teacher)" in result.stderr
    trained = torch.load(out / "1epoch.pth", map_location="cpu", weights_only=False)
    cnn = "aqc.feature_extractor.conv_layers.0.conv.weight"
    start = released.state_dict()["feature_extractor.conv_layers.0.conv.weight"]
    # two updates moved the weights a little from the file's, not to somewhere unrelated
    assert not torch.equal(trained[cnn], start) and (trained[cnn] - start).abs().max() < 0.05


# --------------------------------------------------------------------------------- collate & data
def _items(lengths, seed=0, channels=None):
    rng = np.random.default_rng(seed)
    items = []
    for i, n in enumerate(lengths):
        shape = (n,) if channels is None else (n, channels)
        items.append((f"u{i}", {"speech": rng.standard_normal(shape).astype(np.float32)}))
    return items


def _scaled(fn):
    """An augmentation that is easy to recognise: 3 x the input."""
    class Triple:
        def __call__(self, wave, rng):
            return 3.0 * wave
    fn.augmentation = Triple()
    return fn


def test_collate_crops_views_alike_and_normalises():
    fn = _scaled(AQCCollateFn(train=True, max_sample_size=3000, min_sample_size=1000))
    fn.set_epoch(1)
    ids, batch = fn(_items([5000, 4000, 2500]))
    assert ids == ["u0", "u1", "u2"]
    assert batch["speech"].shape == batch["speech_aug"].shape == (3, 2500)  # shortest, below the maximum
    assert batch["speech_lengths"].tolist() == [2500] * 3
    # normalised before the crop, so the views (3 x each other) coincide after normalisation
    assert torch.allclose(batch["speech"], batch["speech_aug"], atol=1e-5)
    assert int(batch["dropped_utterances"]) == 0


def test_collate_pad_mode_and_stereo_downmix():
    fn = AQCCollateFn(train=False, max_sample_size=3000, min_sample_size=1000, pad=True)
    ids, batch = fn(_items([5000, 1500], channels=2))
    assert batch["speech"].shape == (2, 3000) and batch["speech_lengths"].tolist() == [3000, 1500]
    assert torch.all(batch["speech"][1, 1500:] == 0)
    assert "speech_aug" not in batch  # validation: never augmented


def test_collect_stats_collate_downmixes_and_keeps_full_lengths():
    from aqc.espnet.collate import MonoCollateFn

    ids, batch = MonoCollateFn()(_items([300, 500], channels=2)[:1] + _items([500]))
    assert batch["speech"].shape == (2, 500) and batch["speech_lengths"].tolist() == [300, 500]


def test_collate_drops_short_utterances_and_may_return_an_empty_batch():
    fn = AQCCollateFn(train=True, min_sample_size=100)  # raised to the model's floor
    assert fn.min_sample_size == min_samples_for([(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2) == 720
    ids, batch = fn(_items([719, 800]))
    assert ids == ["u1"] and int(batch["dropped_utterances"]) == 1
    ids, batch = fn(_items([100, 719]))
    assert ids == [] and batch["speech"].shape[0] == 0 and int(batch["dropped_utterances"]) == 2


def test_collate_random_streams_depend_on_epoch_rank_and_split():
    def crops(epoch, rank=0, train=True):
        fn = AQCCollateFn(train=train, seed=5, max_sample_size=1000)
        fn.set_epoch(epoch, rank)
        return fn(_items([4000, 4000]))[1]["speech"]

    assert torch.equal(crops(1), crops(1))
    assert not torch.equal(crops(1), crops(2))
    assert not torch.equal(crops(1), crops(1, rank=1))
    assert not torch.equal(crops(1), crops(1, train=False))


def test_sample_rate_rule(tmp_path):
    from espnet2.train.dataset import sound_loader

    path = sorted(glob.glob(str(DATA / "fsdd" / "recordings" / "*.wav")))[0]  # 8 kHz
    (tmp_path / "wav.scp").write_text(f"utt {path}\n")
    adapter = sound_loader(str(tmp_path / "wav.scp"), float_dtype="float32")
    with pytest.raises(ValueError, match=Path(path).name):
        SampleRateGuard(adapter, "speech", 16000, resample=False)["utt"]
    wave = SampleRateGuard(adapter, "speech", 16000, resample=True)["utt"]
    assert wave.dtype == np.float32 and wave.shape[0] == 2 * sf.info(path).frames


def test_configs_parse():
    for conf in (TINY_YAML, BASE_YAML):
        args = AQCSSLTask.get_parser().parse_args(["--config", str(conf), "--output_dir", "x"])
        assert args.model == "aqc" and args.optim == "adamw" and args.scheduler == "tristagelr"
        AQCSSLTask.check_args(args)
    base = yaml.safe_load(BASE_YAML.read_text())
    assert base["optim_conf"] == {"lr": 5.0e-4, "betas": [0.9, 0.98], "eps": 1.0e-6, "weight_decay": 0.01}
    s = base["scheduler_conf"]
    assert (s["max_steps"], s["warmup_ratio"], s["hold_ratio"], s["decay_ratio"]) == (400000, 0.03, 0.9, 0.07)
    # 16 GPUs x 3.8M samples per update, 400k updates (tests/test_global_batch.py: on any number of ranks)
    assert base["samples_per_update"] == 16 * base["batch_bins_per_rank"] == 16 * 3_800_000
    assert base["updates_per_epoch"] * base["max_epoch"] == s["max_steps"]


def test_registered_into_espnet_ssl_task():
    from espnet2.tasks.ssl import model_choices

    assert model_choices.get_class("aqc") is ESPnetAQCModel
    args = argparse.Namespace(model="aqc", model_conf={"preset": "tiny", "num_layers": 2, "top_k_layers": 2})
    model = AQCSSLTask.build_model(args)
    assert isinstance(model, ESPnetAQCModel) and model.aqc.config.num_layers == 2
    assert aqc_ssl.MODEL_NAME == "aqc"
