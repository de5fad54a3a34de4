"""Downstream probes (issue 17): the probe itself, checkpoint selection by it, the standalone CLI, RESULTS.md.

The probe inside pre-training is exercised by the 2-process run in test_ssl_train.py and by the recipes.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from aqc.espnet.training_probe import read_scores, write_score
from aqc.models import data2vec_aqc_tiny
from aqc.models.io import load_model_file, save_model_file
from aqc.probe import Probe, ProbeConfig, classify_errors, ctc_errors, layer_features, read_labelled_dir

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FSDD = DATA / "fsdd" / "recordings"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
needs_fsdd = pytest.mark.skipif(not FSDD.is_dir(), reason=f"test data not found at {FSDD}")


def fsdd_dir(root: Path, name: str, takes, speakers=("george", "jackson", "lucas", "nicolas")) -> Path:
    """An egs/fsdd-sized labelled dir: every digit of each speaker, the given take indices."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "wav.scp", "w") as scp, open(d / "text", "w") as text:
        for speaker in speakers:
            for digit in range(10):
                for take in takes:
                    utt = f"{speaker}_{digit}_{take}"
                    scp.write(f"{utt} {FSDD / f'{digit}_{speaker}_{take}.wav'}\n")
                    text.write(f"{utt} {DIGITS[digit]}\n")
    return d


@pytest.fixture(scope="module")
def fsdd_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_data")
    return fsdd_dir(root, "train_ft", range(5, 12)), fsdd_dir(root, "dev", range(0, 5))


# ----------------------------------------------------------------------------------- the probes
def test_probe_config_rejects_unknown_options_and_bad_values():
    assert ProbeConfig.from_dict({"every_epochs": 2}).every_epochs == 2
    with pytest.raises(ValueError, match="unknown option.*evry_epochs"):
        ProbeConfig.from_dict({"evry_epochs": 2})
    with pytest.raises(ValueError, match="task 'linear'"):
        ProbeConfig.from_dict({"task": "linear"})
    with pytest.raises(ValueError, match="every_epochs"):
        ProbeConfig.from_dict({"every_epochs": 0})
    with pytest.raises(ValueError, match="probe_conf.l2: expected float"):
        ProbeConfig.from_dict({"l2": "lots"})


def test_classifier_probe_finds_the_layer_that_carries_the_labels():
    """Layer 1 holds the class plus noise, layer 0 noise only: the probe tells them apart."""
    g = torch.Generator().manual_seed(0)
    classes = [f"w{i}" for i in range(10)]
    means = 3 * torch.randn(10, 24, generator=g)

    def make(n):
        labels = torch.randint(0, 10, (n,), generator=g)
        informative = means[labels] + torch.randn(n, 24, generator=g)
        noise = torch.randn(n, 24, generator=g)
        return torch.stack([noise, informative]), [classes[i] for i in labels]

    train_x, train_y = make(300)
    dev_x, dev_y = make(200)
    errors, chance = classify_errors(train_x, train_y, dev_x, dev_y)
    assert errors[1] < 0.05
    assert errors[0] > 0.75  # ten classes: chance is about 0.9
    assert 0.8 < chance < 0.97
    # a dev label never seen in training is an error, never a match
    errors_unseen, _ = classify_errors(train_x, train_y, dev_x, ["unseen"] * len(dev_y))
    assert errors_unseen == [1.0, 1.0]


def _synthetic_ctc(n, g, informative, codes):
    """Utterances of letters a-h: each letter's code for 3 frames, then the gap code (codes[-1])."""
    letters = "abcdefgh"
    feats, texts = [], []
    for _ in range(n):
        words = ["".join(letters[int(i)] for i in torch.randint(0, 8, (int(torch.randint(1, 4, (1,), generator=g)),),
                                                                generator=g))
                 for _ in range(int(torch.randint(1, 3, (1,), generator=g)))]
        text = " ".join(words)
        frames = []
        for ch in text:
            code = codes[-1] if ch == " " else codes[letters.index(ch)]
            frames += [code] * 3 + [codes[-1]]
        x = torch.stack(frames) + 0.3 * torch.randn(len(frames), 16, generator=g)
        feats.append(x if informative else torch.randn_like(x))
        texts.append(text)
    return feats, texts


def test_ctc_probe_reads_letters_from_frames_that_carry_them():
    """Two layers: layer 0 carries the letters, layer 1 is noise; one probe fits both at once."""
    g = torch.Generator().manual_seed(1)
    codes = 3 * torch.randn(9, 16, generator=g)
    config = ProbeConfig(ctc_steps=300, ctc_lr=1e-2)
    train, train_texts = _synthetic_ctc(150, g, True, codes)
    dev, dev_texts = _synthetic_ctc(50, g, True, codes)
    train = [torch.stack([x, torch.randn(x.shape, generator=g)]) for x in train]
    dev = [torch.stack([x, torch.randn(x.shape, generator=g)]) for x in dev]
    informative, noise = ctc_errors(train, train_texts, dev, dev_texts, config)
    assert informative < 0.05
    assert noise > 0.6


def test_batched_features_equal_features_one_utterance_at_a_time():
    torch.manual_seed(0)
    model = data2vec_aqc_tiny()
    waves = [torch.randn(n) for n in (400, 3000, 5200, 16000, 9100, 5200)]  # 400: one frame
    batched = layer_features(model, waves, batch_seconds=30.0)
    alone = layer_features(model, waves, batch_seconds=0.0)
    for a, b, wave in zip(batched, alone, waves):
        assert a.shape == b.shape == (model.config.num_layers + 1, int(model.frame_lengths(torch.tensor(wave.numel()))),
                                      model.config.embed_dim)
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@needs_fsdd
def test_probe_changes_no_weight_mode_or_random_stream(fsdd_sets):
    torch.manual_seed(3)
    model = data2vec_aqc_tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    probe = Probe.from_dirs(*fsdd_sets, ProbeConfig(max_utterances=60))
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    result = probe(model)
    assert torch.equal(torch.rand(3), expected)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.task == "classify" and len(result.layer_errors) == model.config.num_layers + 1
    assert result.train_utterances == result.dev_utterances == 60


@needs_fsdd
def test_labelled_dir_limits_and_errors(fsdd_sets, tmp_path):
    train, _ = fsdd_sets
    limited = read_labelled_dir(train, max_utterances=1000, max_seconds=20.0)
    assert limited.seconds <= 20.0 + 1e-6 and limited.left_out == 280 - len(limited.keys) > 0
    again = read_labelled_dir(train, max_utterances=1000, max_seconds=20.0)
    assert again.keys == limited.keys  # seeded
    # a transcript missing, a command instead of a file, a broken file: each named with the fix
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "wav.scp").write_text(f"a {FSDD / '0_george_0.wav'}\nb {FSDD / '1_george_0.wav'}\n")
    (broken / "text").write_text("a zero\n")
    with pytest.raises(ValueError, match=r"broken/text: no transcript for 1 utterance.*first: b.*fix_data_dir"):
        read_labelled_dir(broken)
    (broken / "text").write_text("a zero\nb one\n")
    (broken / "wav.scp").write_text("a sox x.wav -t wav - |\nb x.wav\n")
    with pytest.raises(ValueError, match="is a command, not a file"):
        read_labelled_dir(broken)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    (broken / "wav.scp").write_text(f"a {bad}\nb {FSDD / '1_george_0.wav'}\n")
    with pytest.raises(ValueError, match=r"wav.scp: a: cannot"):
        read_labelled_dir(broken)
    with pytest.raises(FileNotFoundError, match="wav.scp not found. The probe needs a labelled"):
        read_labelled_dir(tmp_path)
    (broken / "text").unlink()
    with pytest.raises(FileNotFoundError, match="broken: text not found"):
        read_labelled_dir(broken)


# ------------------------------------------------------------------------------------ selection
def _fake_ssl_exp(root: Path, errors):
    """An experiment dir with <N>epoch.pth (aqc model files, update 100 N) and probe scores."""
    root.mkdir(parents=True)
    torch.manual_seed(0)
    model = data2vec_aqc_tiny()
    for epoch, error in enumerate(errors, 1):
        model.set_num_updates(100 * epoch)
        save_model_file(model, root / f"{epoch}epoch.pth")
        write_score(root / "probe" / "scores.jsonl",
                    {"epoch": epoch, "task": "classify", "metric": "label error rate", "layer_errors": [error, error + 0.1],
                     "best_layer": 0, "best_error": error, "chance": 0.9, "train_utterances": 280,
                     "dev_utterances": 200, "seconds": 1.5, "num_updates": 100 * epoch,
                     "share_of_time": 0.05})
    (root / "latest.pth").symlink_to(f"{len(errors)}epoch.pth")
    return root


def _export(*args):
    return subprocess.run([sys.executable, "-m", "aqc.bin.export_model", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_export_by_probe_keeps_the_last_epoch_unless_it_is_clearly_worse(tmp_path):
    # 200 dev utterances: one standard error at 40 % is 3.5 points
    within = _fake_ssl_exp(tmp_path / "within", [0.6, 0.40, 0.43])
    out = tmp_path / "within.pt"
    result = _export("--ssl_exp", str(within), "--select", "probe", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert load_model_file(out).num_updates == 300
    record = json.loads(Path(str(out) + ".json").read_text())
    assert (record["epoch"], record["best_probed_epoch"]) == (3, 2) and abs(record["standard_error"] - 0.0346) < 1e-3
    assert "the last epoch, within one standard error" in result.stderr

    exp = _fake_ssl_exp(tmp_path / "ssl", [0.6, 0.4, 0.4, 0.5])
    out = tmp_path / "aqc_model.pt"
    result = _export("--ssl_exp", str(exp), "--select", "probe", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert load_model_file(out).num_updates == 200  # epoch 2: the earliest of the two best; the last is worse
    record = json.loads(Path(str(out) + ".json").read_text())
    assert record["select"] == "probe" and record["epoch"] == 2 and record["probed_epochs"] == [1, 2, 3, 4]
    assert "epoch 2, label error rate 0.4000: the best probed epoch; the last one probed (epoch 4, 0.5000) is " \
        "worse by more than one standard error" in result.stderr
    result = _export("--ssl_exp", str(exp), "--select", "latest", "--output", str(out))
    assert result.returncode == 0 and load_model_file(out).num_updates == 400
    assert json.loads(Path(str(out) + ".json").read_text())["select"] == "latest"
    # ESPnet removed the best epoch's checkpoint (its criterion was not listed): say so, export nothing else
    (exp / "2epoch.pth").unlink()
    result = _export("--ssl_exp", str(exp), "--select", "probe", "--output", str(tmp_path / "other.pt"))
    assert result.returncode == 2 and "epoch 2 scored best" in result.stderr and "probe_err" in result.stderr
    assert not (tmp_path / "other.pt").exists()
    # a run without a probe
    (exp / "probe" / "scores.jsonl").unlink()
    result = _export("--ssl_exp", str(exp), "--select", "probe", "--output", str(tmp_path / "other.pt"))
    assert result.returncode == 2 and "no probe scores" in result.stderr and "--select latest" in result.stderr


def test_scores_of_a_redone_epoch_replace_the_old_line(tmp_path):
    path = tmp_path / "scores.jsonl"
    write_score(path, {"epoch": 1, "best_error": 0.5})
    write_score(path, {"epoch": 2, "best_error": 0.4})
    write_score(path, {"epoch": 2, "best_error": 0.3})  # a resumed run redid epoch 2
    assert read_scores(path) == [{"epoch": 1, "best_error": 0.5}, {"epoch": 2, "best_error": 0.3}]
    path.write_text('{"epoch": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"scores.jsonl:2: not a JSON line"):
        read_scores(path)


# ------------------------------------------------------------------------------------ standalone
@needs_fsdd
def test_probe_cli_scores_any_model_format_alike(fsdd_sets, tmp_path):
    """The same weights as an aqc model file and as a Hugging Face folder get the same per-layer scores."""
    from aqc.interop import export_hf

    torch.manual_seed(4)
    model = data2vec_aqc_tiny()
    save_model_file(model, tmp_path / "model.pt")
    export_hf(model, tmp_path / "hf")
    train, dev = fsdd_sets
    result = subprocess.run(
        [sys.executable, "-m", "aqc.bin.probe", "--model_file", str(tmp_path / "model.pt"), str(tmp_path / "hf"),
         "--train_data", str(train), "--dev_data", str(dev), "--max_utterances", "120",
         "--output", str(tmp_path / "probe.json")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "probe.json").read_text())
    assert report["task"] == "classify"
    ours, theirs = (report["models"][str(tmp_path / name)] for name in ("model.pt", "hf"))
    assert len(ours["layer_errors"]) == model.config.num_layers + 1
    np.testing.assert_allclose(ours["layer_errors"], theirs["layer_errors"], atol=0.011)  # one utterance in 100
    assert "<- best" in result.stdout and "chance" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "aqc.bin.probe", "--model_file", str(tmp_path / "nope.pt"),
                              "--train_data", str(train), "--dev_data", str(dev)],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
    assert missing.returncode == 2 and "nope.pt: no such file" in missing.stderr


# ------------------------------------------------------------------------------------ RESULTS.md
def test_results_show_the_probe_curve_and_the_exported_epoch(tmp_path):
    from aqc.results import make_results

    exp = tmp_path / "exp"
    ssl = _fake_ssl_exp(exp / "ssl_pretrain_aqc", [0.7, 0.5, 0.55])
    (ssl / "aqc_model.probe.pt.json").write_text(json.dumps({"select": "probe", "checkpoint": str(ssl / "2epoch.pth"),
                                                       "epoch": 2, "num_updates": 200, "probe_error": 0.5,
                                                       "metric": "label error rate"}))
    text = make_results(tmp_path / "RESULTS.md", exp, test_sets=[], environment=False)
    assert "### Pre-training probe" in text
    assert "| 2 | 200 | 50.0 % | 0 | 50.0 60.0 | exported (probe) |" in text
    assert "| 1 | 100 | 70.0 % | 0 | 70.0 80.0 |  |" in text
    assert "Probing took 4 s, 5.0 % of the pre-training's wall time" in text


def test_training_options_are_checked_before_training(tmp_path):
    import argparse

    from aqc.cli import AQCUserError
    from aqc.espnet.training_probe import prepare_args

    labelled = tmp_path / "train_ft"
    labelled.mkdir()
    (labelled / "wav.scp").write_text("a x.wav\n")

    def args(**kw):
        base = dict(probe_train_data=str(labelled), probe_dev_data=str(labelled), probe_conf={},
                    best_model_criterion=[["valid", "loss", "min"]])
        return argparse.Namespace(**{**base, **kw})

    with pytest.raises(AQCUserError, match="give both --probe_train_data and --probe_dev_data"):
        prepare_args(args(probe_dev_data=None))
    with pytest.raises(AQCUserError, match=r"--probe_train_data .*train_ft: text not found"):
        prepare_args(args())
    (labelled / "text").write_text("a zero\n")
    with pytest.raises(AQCUserError, match="unknown option"):
        prepare_args(args(probe_conf={"steps": 3}))
    ok = args()
    prepare_args(ok)
    assert ok.best_model_criterion == [["valid", "loss", "min"], ["valid", "probe_err", "min"]]
    prepare_args(ok)  # listed once
    assert ok.best_model_criterion.count(["valid", "probe_err", "min"]) == 1
    off = args(probe_train_data=None, probe_dev_data=None)
    prepare_args(off)
    assert off.best_model_criterion == [["valid", "loss", "min"]]


@needs_fsdd
@pytest.mark.slow
def test_a_few_hundred_updates_of_pre_training_score_measurably_better_than_random_init(fsdd_sets, tmp_path):
    """egs/fsdd-sized probe sets; the tiny model with the recipe's model_conf, 400 updates on the other takes
    (all speakers' unlabelled audio; the student's view with Gaussian noise), no ESPnet."""
    import yaml

    from aqc.models import Data2VecAQC
    from aqc.models.io import config_from_model_conf

    conf = yaml.safe_load((REPO / "egs" / "fsdd" / "conf" / "pretrain_aqc.yaml").read_text())["model_conf"]
    conf.update(ema_anneal_end_step=400)
    torch.manual_seed(0)
    model = Data2VecAQC(config_from_model_conf(conf))
    probe = Probe.from_dirs(*fsdd_sets)
    random_init = probe(model)

    unlabelled = fsdd_dir(tmp_path, "unlabelled", range(12, 50),  # takes the probe never sees, every speaker
                          speakers=("george", "jackson", "lucas", "nicolas", "theo", "yweweler"))
    pool = read_labelled_dir(unlabelled, max_utterances=800)  # the reader gives normalised 16 kHz waveforms
    waves = [w for w in pool.waveforms if w.numel() >= 3200]
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.student_parameters(), lr=5e-4, betas=(0.9, 0.98), weight_decay=0.01)
    model.train()
    for update in range(1, 401):
        batch = [waves[int(i)] for i in torch.randint(0, len(waves), (8,), generator=g)]
        crop = min(16000, min(w.numel() for w in batch))
        clean = torch.stack([w[:crop] for w in batch])
        noisy = clean + 0.3 * torch.randn(clean.shape, generator=g)
        augmented = (noisy - noisy.mean(1, keepdim=True)) / noisy.std(1, keepdim=True)
        for group in optimizer.param_groups:
            group["lr"] = 5e-4 * min(1.0, update / 40)
        loss, _ = model(clean, augmented)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.student_parameters(), 10.0)
        optimizer.step()
        model.update_teacher(update)
    trained = probe(model)
    # chance is 90 %; random CNN features already carry some spectral information (about 74 % here)
    assert random_init.best_error < random_init.chance
    assert trained.best_error < random_init.best_error - 3 * random_init.standard_error, (random_init, trained)
