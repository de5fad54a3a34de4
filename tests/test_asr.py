"""Downstream ASR: the ``aqc`` ESPnet frontend, CTC fine-tuning, decoding and scoring (issue 6).

Unit tests of the frontend, then one end-to-end run through ESPnet's real trainer on spoken digits
(FSDD, resampled to 16 kHz): fine-tune a tiny pre-trained upstream for a few updates (frozen, then
unfrozen), delete the pre-training directory, copy the experiment elsewhere, decode it (greedy in a fresh
process, beam search in-process) and score.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FSDD = DATA / "fsdd" / "recordings"
CONF = REPO / "egs" / "TEMPLATE" / "conf"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Imports espnet2.tasks.asr once per test process (about 15 s) and registers ``frontend: aqc``.
frontend_mod = pytest.importorskip("aqc.espnet.frontend")
from espnet2.tasks.asr import ASRTask, frontend_choices  # noqa: E402

from aqc.models import data2vec_aqc_tiny  # noqa: E402
from aqc.models.io import save_model_file  # noqa: E402

AQCFrontend = frontend_mod.AQCFrontend


# ----------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def upstream_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pretrain") / "aqc_model.pt"
    save_model_file(data2vec_aqc_tiny(), path)
    return path


def _batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), max(lengths))
    for b, n in enumerate(lengths):
        x[b, :n] = torch.randn(n, generator=g) * (b + 1) + b
    return x, torch.tensor(lengths)


def make_digit_data(root: Path, utts_per_digit: int, first_index: int, speakers=("jackson", "george")):
    """A Kaldi-style data dir of FSDD digits at 16 kHz: wav.scp, text, speech_shape."""
    import soundfile as sf
    import torchaudio.functional as AF

    root.mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    wav_scp, text, shape = [], [], []
    for d, word in enumerate(DIGITS):
        for i in range(utts_per_digit):
            spk = speakers[i % len(speakers)]
            src = FSDD / f"{d}_{spk}_{first_index + i}.wav"
            audio, sr = sf.read(src, dtype="float32")
            audio = AF.resample(torch.from_numpy(audio), sr, 16000).numpy()
            utt = f"{spk}-{d}-{first_index + i}"
            dst = root / "wav" / f"{utt}.wav"
            sf.write(dst, audio, 16000, subtype="PCM_16")
            wav_scp.append(f"{utt} {dst}")
            text.append(f"{utt} {word}")
            shape.append(f"{utt} {len(audio)}")
    for name, lines in (("wav.scp", wav_scp), ("text", text), ("speech_shape", shape)):
        (root / name).write_text("\n".join(sorted(lines)) + "\n")
    return root


def write_token_list(path: Path) -> Path:
    chars = sorted(set("".join(DIGITS)))
    path.write_text("\n".join(["<blank>", "<unk>", "<space>", *chars, "<sos/eos>"]) + "\n")
    return path


def upstream_state(state_dict, part):
    prefix = f"frontend.upstream.{part}."
    return {k: v.clone() for k, v in state_dict.items() if k.startswith(prefix)}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -------------------------------------------------------------------------------------- unit tests
def test_registered_and_configs_parse():
    assert frontend_choices.get_class("aqc") is AQCFrontend
    import yaml

    for name in ("10min", "1h", "10h", "100h", "tiny"):
        conf = yaml.safe_load((CONF / f"finetune_{name}.yaml").read_text())
        assert conf["frontend"] == "aqc" and conf["model_conf"]["ctc_weight"] == 1.0
        assert conf["scheduler"] == "tristagelr" and conf["scheduler_conf"]["final_lr_scale"] == 0.05
        assert conf["optim_conf"]["betas"] == [0.9, 0.98] and conf["optim_conf"]["eps"] == 1e-8
        if name != "tiny":  # updates = epochs x updates per epoch = the scheduler's length, 25.6 M samples each
            assert conf["max_epoch"] * conf["updates_per_epoch"] == conf["scheduler_conf"]["max_steps"]
            assert conf["samples_per_update"] == 8 * conf["batch_bins_per_rank"] == 25_600_000
        assert conf["best_model_criterion"][0] == ["valid", "wer_ctc", "min"]  # the reference's dev WER
    ten_h = yaml.safe_load((CONF / "finetune_10h.yaml").read_text())
    assert ten_h["frontend_conf"]["freeze_encoder_steps"] == 10000
    assert ten_h["frontend_conf"]["mask_channel_prob"] == 0.5 and ten_h["frontend_conf"]["layerdrop"] == 0.05
    for name in ("greedy", "beam"):
        conf = yaml.safe_load((CONF / f"decode_{name}.yaml").read_text())
        assert conf["ctc_weight"] == 1.0


def test_shapes_and_lengths_match_upstream(upstream_file):
    from aqc.models.io import load_model_file

    fe = AQCFrontend(model_file=str(upstream_file)).eval()
    model = load_model_file(upstream_file).eval()
    lengths = [16000, 11000, 4000]
    x, lens = _batch(lengths)
    feats, flens = fe(x, lens)
    hidden, ref_lens = model.extract_features(frontend_mod.normalize_waveforms(x, lens), lens)
    assert fe.output_size() == model.config.embed_dim
    assert feats.shape == (3, int(ref_lens.max()), model.config.embed_dim)
    assert torch.equal(flens, ref_lens)
    for b in range(3):
        n = int(flens[b])
        torch.testing.assert_close(feats[b, :n], hidden[-1][b, :n])
        # padding does not change an utterance's features
        alone, alone_len = fe(x[b:b + 1, : lengths[b]], lens[b:b + 1])
        assert int(alone_len) == n
        torch.testing.assert_close(alone[0], feats[b, :n], atol=1e-4, rtol=1e-4)
    # one chosen layer: the upstream is cut above it
    fe2 = AQCFrontend(model_file=str(upstream_file), layer=2).eval()
    assert len(fe2.upstream.encoder.layers) == 2
    torch.testing.assert_close(fe2(x, lens)[0][0], hidden[2][0])


def test_normalization_over_valid_samples():
    x, lens = _batch([8000, 3000])
    y = frontend_mod.normalize_waveforms(x, lens)
    for b, n in enumerate([8000, 3000]):
        assert abs(float(y[b, :n].mean())) < 1e-4 and abs(float(y[b, :n].std(unbiased=False)) - 1) < 1e-3
    assert torch.all(y[1, 3000:] == 0)


def test_weighted_sum_is_learnable(upstream_file):
    fe = AQCFrontend(model_file=str(upstream_file), layer="weighted", mask_prob=0.0).train()
    assert fe.layer_weights.shape == (fe.config.num_layers + 1,) and fe.layer_weights.requires_grad
    x, lens = _batch([8000, 6000])
    feats, _ = fe(x, lens)
    feats.pow(2).mean().backward()
    assert fe.layer_weights.grad is not None and fe.layer_weights.grad.abs().sum() > 0
    opt = torch.optim.SGD([fe.layer_weights], lr=1.0)
    before = fe.layer_weights.detach().clone()
    opt.step()
    assert not torch.equal(before, fe.layer_weights.detach())
    # weights of a frozen upstream still learn (the upstream runs under no_grad while frozen)
    frozen = AQCFrontend(model_file=str(upstream_file), layer="weighted", freeze_encoder_steps=5).train()
    frozen(x, lens)[0].sum().backward()
    assert frozen.layer_weights.grad is not None
    assert all(p.grad is None for p in frozen.upstream.parameters())


def test_masking_only_in_training(upstream_file):
    fe = AQCFrontend(model_file=str(upstream_file), mask_prob=0.5, mask_length=3, mask_channel_prob=0.3,
                     mask_channel_length=8, layerdrop=0.0)
    x, lens = _batch([16000, 12000])
    fe.eval()
    a, _ = fe(x, lens)
    b, _ = fe(x, lens)
    assert torch.equal(a, b)  # eval: deterministic, no masks
    fe.train()
    torch.manual_seed(1)
    c, _ = fe(x, lens)
    assert not torch.allclose(a, c)
    # time masking: mask_emb on spans of valid frames only, the same count per row
    h = torch.randn(2, 40, fe.config.embed_dim)
    fe.mask_channel_prob = 0.0
    masked = fe._mask(h, torch.tensor([40, 30]))
    is_emb = (masked == fe.upstream.mask_emb).all(-1)
    assert is_emb.any() and int(is_emb[0].sum()) == int(is_emb[1].sum())
    assert not is_emb[1, 30:].any()
    assert torch.equal(masked[~is_emb], h[~is_emb])
    # channel masking: whole channel spans zeroed over all frames
    fe.mask_prob, fe.mask_channel_prob = 0.0, 0.3
    masked = fe._mask(h, torch.tensor([40, 30]))
    zero = (masked == 0).all(1)  # (B, C)
    assert zero.any(-1).all()
    assert torch.equal(masked[~zero[:, None, :].expand_as(h)], h[~zero[:, None, :].expand_as(h)])


def test_cnn_frozen_and_update_count(upstream_file):
    fe = AQCFrontend(model_file=str(upstream_file), freeze_encoder_steps=1, mask_prob=0.0, layerdrop=0.0).train()
    assert not any(p.requires_grad for p in fe.upstream.feature_extractor.parameters())
    head = torch.nn.Linear(fe.output_size(), 3)  # stands in for the CTC head
    opt = torch.optim.Adam([*fe.parameters(), *head.parameters()], lr=1e-2)
    other = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    x, lens = _batch([8000, 6000])
    enc0 = {k: v.clone() for k, v in fe.upstream.encoder.state_dict().items()}
    assert fe.encoder_frozen
    head(fe(x, lens)[0]).sum().backward()  # frozen: no gradient reaches the upstream
    assert all(p.grad is None for p in fe.upstream.parameters())
    other.step()  # another model's optimizer does not count
    assert int(fe.num_updates) == 0
    opt.step()
    opt.zero_grad()
    assert int(fe.num_updates) == 1 and not fe.encoder_frozen
    assert all(torch.equal(v, fe.upstream.encoder.state_dict()[k]) for k, v in enc0.items())
    head(fe(x, lens)[0]).sum().backward()
    assert any(p.grad is not None for p in fe.upstream.encoder.parameters())
    assert all(p.grad is None for p in fe.upstream.feature_extractor.parameters())
    assert "num_updates" in fe.state_dict()
    # a deep copy counts its own optimizer's updates
    import copy

    twin = copy.deepcopy(fe)
    torch.optim.SGD(twin.parameters(), lr=0.0).step()
    assert int(twin.num_updates) == 2 and int(fe.num_updates) == 1


def test_feature_grad_mult_trains_the_cnn_after_the_freeze(upstream_file):
    x, lens = _batch([8000, 6000])

    def cnn_grad(fe):
        fe.zero_grad()
        out = fe(x, lens)[0]
        if not out.requires_grad:  # nothing trains
            return None
        out.pow(2).mean().backward()
        grads = [p.grad for p in fe.upstream.feature_extractor.parameters()]
        return None if all(g is None for g in grads) else torch.cat([g.flatten() for g in grads])

    plain = AQCFrontend(model_file=str(upstream_file), feature_grad_mult=1.0, mask_prob=0.0, layerdrop=0.0).train()
    half = AQCFrontend(model_file=str(upstream_file), feature_grad_mult=0.5, mask_prob=0.0, layerdrop=0.0).train()
    assert all(p.requires_grad for p in plain.upstream.feature_extractor.parameters())
    g1, g_half = cnn_grad(plain), cnn_grad(half)
    assert g1 is not None and g1.abs().sum() > 0
    torch.testing.assert_close(g_half, 0.5 * g1)  # the gradient is scaled, the forward is the same
    # while the encoder is frozen the CNN is frozen too
    frozen = AQCFrontend(model_file=str(upstream_file), feature_grad_mult=1.0, freeze_encoder_steps=3,
                         mask_prob=0.0, layerdrop=0.0).train()
    assert frozen.encoder_frozen and cnn_grad(frozen) is None
    with pytest.raises(ValueError, match="feature_grad_mult"):
        AQCFrontend(model_file=str(upstream_file), feature_grad_mult=-1.0)


def test_upstream_conf_replaces_model_file(upstream_file, tmp_path):
    fe = AQCFrontend(model_file=str(upstream_file)).eval()
    rebuilt = AQCFrontend(model_file=str(tmp_path / "gone.pt"), upstream_conf=fe.upstream_conf).eval()
    rebuilt.load_state_dict(fe.state_dict())
    x, lens = _batch([8000, 5000])
    torch.testing.assert_close(rebuilt(x, lens)[0], fe(x, lens)[0])
    with pytest.raises(FileNotFoundError, match="upstream_conf"):
        AQCFrontend(model_file=str(tmp_path / "gone.pt"))
    with pytest.raises(ValueError, match="16 kHz"):
        AQCFrontend(model_file=str(upstream_file), fs="8k")


def test_ctc_greedy():
    from aqc.bin.asr_inference import ctc_greedy

    ids = torch.tensor([[0, 3, 3, 0, 3, 4, 4, 0, 5, 5]])
    log_probs = torch.nn.functional.one_hot(ids, 6).float().log_softmax(-1)
    (tokens, score), = ctc_greedy(log_probs, torch.tensor([8]), blank_id=0, drop_ids={5})
    assert tokens == [3, 3, 4]
    assert score < 0


# ------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, upstream_file):
    """Fine-tune through ESPnet's trainer: 2 epochs of 2 updates, the first 2 with the encoder frozen.

    Then delete the pre-training directory and move the experiment: returns the copied experiment."""
    if not FSDD.is_dir():
        pytest.skip(f"test data not found: {FSDD}")
    from aqc.bin import asr_train

    root = tmp_path_factory.mktemp("e2e")
    pretrain_dir = root / "pretrain"
    pretrain_dir.mkdir()
    model_file = pretrain_dir / "aqc_model.pt"
    shutil.copy(upstream_file, model_file)
    pre = torch.load(model_file, map_location="cpu", weights_only=False)["state_dict"]
    train = make_digit_data(root / "data" / "train", 2, 10)
    test = make_digit_data(root / "data" / "test", 1, 0)
    tokens = write_token_list(root / "tokens.txt")
    exp = root / "exp" / "asr"
    asr_train.main([
        "--config", str(CONF / "finetune_tiny.yaml"),
        "--frontend_conf", f"model_file={model_file}",
        "--frontend_conf", "freeze_encoder_steps=2",
        "--token_type", "char", "--token_list", str(tokens),
        "--train_data_path_and_name_and_type", f"{train}/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{train}/text,text,text",
        "--train_shape_file", f"{train}/speech_shape",
        "--valid_data_path_and_name_and_type", f"{test}/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{test}/text,text,text",
        "--valid_shape_file", f"{test}/speech_shape",
        "--batch_bins", "60000", "--num_iters_per_epoch", "2", "--max_epoch", "2",
        "--keep_nbest_models", "2", "--scheduler_conf", "max_steps=4",
        "--optim_conf", "lr=0.005", "--ngpu", "0", "--num_workers", "0", "--seed", "0",
        "--plot_every_epochs", "3", "--output_dir", str(exp),
    ])
    # Self-contained: delete the pre-training directory, move the experiment elsewhere.
    shutil.rmtree(pretrain_dir)
    copied = root / "elsewhere" / "asr"
    shutil.copytree(exp, copied, symlinks=True)
    shutil.rmtree(exp)
    return dict(root=root, exp=copied, pre=pre, test=test, model=copied / "valid.loss.best.pth")


@pytest.mark.slow
def test_finetune_freezes_then_trains_encoder(finetuned):
    exp, pre = finetuned["exp"], finetuned["pre"]
    assert "upstream_conf" in (exp / "config.yaml").read_text()
    # --plot_every_epochs 3 in 2 epochs: drawn once, when training ended, with both epochs
    assert "plot_every_epochs: 3" in (exp / "config.yaml").read_text()
    assert (exp / "images" / "loss.png").is_file() and (exp / "images" / "cer_ctc.png").is_file()
    pre_encoder = {f"frontend.upstream.{k}": v for k, v in pre.items() if k.startswith("encoder.")}
    pre_cnn = {f"frontend.upstream.{k}": v for k, v in pre.items() if k.startswith("feature_extractor.")}
    ep1 = torch.load(exp / "1epoch.pth", map_location="cpu", weights_only=False)
    ep2 = torch.load(exp / "2epoch.pth", map_location="cpu", weights_only=False)
    assert int(ep1["frontend.num_updates"]) == 2 and int(ep2["frontend.num_updates"]) == 4
    # 2 frozen updates: the transformer is untouched while the CTC head trains
    assert same(upstream_state(ep1, "encoder"), pre_encoder)
    assert not torch.equal(ep1["ctc.ctc_lo.weight"], ep2["ctc.ctc_lo.weight"])
    # 2 more updates after the freeze: the transformer changed; the CNN never does
    enc2 = upstream_state(ep2, "encoder")
    assert enc2.keys() == pre_encoder.keys()
    assert any(not torch.equal(enc2[k], pre_encoder[k]) for k in enc2)
    assert same(upstream_state(ep1, "feature_extractor"), pre_cnn)
    assert same(upstream_state(ep2, "feature_extractor"), pre_cnn)


@pytest.mark.slow
def test_validation_reports_the_word_error_rate_that_decoding_gets(finetuned):
    """ESPnet reports only cer_ctc for a CTC model; aqc adds wer_ctc, so that fine-tuning can keep the
    checkpoint with the lowest dev WER as the reference does (valid.wer_ctc.best.pth)."""
    from aqc.bin import asr_inference

    root, exp, test = finetuned["root"], finetuned["exp"], finetuned["test"]
    reporter = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False)["reporter"]
    reported = {epoch: stats["valid"]["wer_ctc"] for epoch, stats in reporter["stats"].items()}
    assert sorted(reported) == [1, 2]
    # and each epoch's training stats hold the thread count its updates ran with (fixed in this process)
    assert [stats["train"]["intra_op_threads"] for stats in reporter["stats"].values()] == [torch.get_num_threads()] * 2
    best = min(reported, key=reported.get)
    assert (exp / "valid.wer_ctc.best.pth").resolve().name == f"{best}epoch.pth"
    # one word per utterance: the batch-weighted mean ESPnet reports is the corpus WER of greedy decoding
    out = root / "decode_epoch2"
    asr_inference.main(["--config", str(CONF / "decode_greedy.yaml"), "--asr_train_config", str(exp / "config.yaml"),
                        "--asr_model_file", str(exp / "2epoch.pth"), "--batch_size", "1",
                        "--data_path_and_name_and_type", f"{test}/wav.scp,speech,sound", "--ngpu", "0",
                        "--output_dir", str(out)])
    refs = dict(line.split(maxsplit=1) for line in (test / "text").read_text().splitlines())
    hyps = dict((line.split(maxsplit=1) + [""])[:2] for line in (out / "1best_recog" / "text").read_text().splitlines())
    import editdistance

    errors = sum(editdistance.eval(hyps[u].split(), refs[u].split()) for u in refs)
    assert reported[2] == pytest.approx(errors / len(refs), abs=1e-6)


@pytest.mark.slow
def test_a_packed_model_decodes_as_the_experiment_does(finetuned, tmp_path):
    """aqc.bin.pack: one zip (model, config, token list) that asr_inference --model_archive decodes, with the
    hypotheses of the experiment directory; members that would leave the folder are refused."""
    import zipfile

    from aqc.bin import asr_inference, pack
    from aqc.packing import ArchiveError, unpack

    exp, test = finetuned["exp"], finetuned["test"]
    archive = tmp_path / "shared" / "asr.zip"
    assert pack.main(["--asr_exp", str(exp), "--model_file", str(finetuned["model"]), "--out", str(archive)]) == 0
    common = ["--config", str(CONF / "decode_greedy.yaml"), "--batch_size", "4", "--ngpu", "0",
              "--data_path_and_name_and_type", f"{test}/wav.scp,speech,sound"]
    asr_inference.main([*common, "--asr_train_config", str(exp / "config.yaml"),
                        "--asr_model_file", str(finetuned["model"]), "--output_dir", str(tmp_path / "direct")])
    moved = tmp_path / "elsewhere.zip"
    archive.rename(moved)  # the archive alone, away from the experiment
    asr_inference.main([*common, "--model_archive", str(moved), "--output_dir", str(tmp_path / "packed")])
    for name in ("text", "token_int"):
        assert (tmp_path / "packed" / "1best_recog" / name).read_text() == \
            (tmp_path / "direct" / "1best_recog" / name).read_text()
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(moved) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("../outside.txt", "x")
    with pytest.raises(ArchiveError, match="would be written outside the folder; refused"):
        unpack(evil)
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.slow
def test_decode_copied_model_and_score(finetuned):
    from aqc.bin import asr_inference

    root, exp, test, model_pth = finetuned["root"], finetuned["exp"], finetuned["test"], finetuned["model"]
    assert model_pth.exists() and not (root / "pretrain").exists()
    # the model built from the copied directory holds the fine-tuned weights (ESPnet loads non-strictly)
    model, _ = ASRTask.build_model_from_file(exp / "config.yaml", model_pth, "cpu")
    state = torch.load(model_pth, map_location="cpu", weights_only=False)
    assert same({k: v for k, v in model.state_dict().items() if k.startswith("frontend.")},
                {k: v for k, v in state.items() if k.startswith("frontend.")})

    # greedy, in a fresh process through the command-line entry point
    greedy_out = root / "decode_greedy"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "aqc.bin.asr_inference", "--config", str(CONF / "decode_greedy.yaml"),
         "--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(model_pth),
         "--data_path_and_name_and_type", f"{test}/wav.scp,speech,sound", "--batch_size", "4",
         "--ngpu", "0", "--output_dir", str(greedy_out)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "greedy CTC decoding" in proc.stderr
    for name in ("text", "token", "token_int", "score"):
        assert len((greedy_out / "1best_recog" / name).read_text().splitlines()) == 10

    # the greedy hypotheses are the argmax paths of the model's CTC posteriors
    import soundfile as sf

    utt, path = (test / "wav.scp").read_text().split("\n")[0].split()
    wav = torch.from_numpy(sf.read(path, dtype="float32")[0])[None]
    with torch.no_grad():
        enc, enc_lens = model.eval().encode(wav, torch.tensor([wav.shape[1]]))
        ids = asr_inference.ctc_greedy(model.ctc.log_softmax(enc), enc_lens, model.blank_id,
                                       {model.sos, model.eos})[0][0]
    token_int = dict(line.split(maxsplit=1) if " " in line else (line, "")
                     for line in (greedy_out / "1best_recog" / "token_int").read_text().splitlines())
    assert token_int[utt].split() == [str(i) for i in ids]

    # CTC prefix beam search through ESPnet's BeamSearch
    beam_out = root / "decode_beam"
    asr_inference.main([
        "--config", str(CONF / "decode_beam.yaml"), "--beam_size", "3",
        "--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(model_pth),
        "--data_path_and_name_and_type", f"{test}/wav.scp,speech,sound",
        "--ngpu", "0", "--output_dir", str(beam_out),
    ])
    assert len((beam_out / "1best_recog" / "score").read_text().splitlines()) == 10

    score = pytest.importorskip("aqc.bin.score")
    rc = score.main(["--ref", str(test / "text"), "--hyp", str(greedy_out / "1best_recog" / "text"),
                     "--out_dir", str(greedy_out / "score")])
    assert not rc
    scores = json.loads((greedy_out / "score" / "scores.json").read_text())
    assert scores["num_utts"] == 10 and 0.0 <= scores["wer"]["rate"] <= 100.0


def write_digit_lm(root: Path) -> tuple:
    """A uniform word bigram ARPA over the ten digit words and a char lexicon for them."""
    import math

    lp = math.log10(1 / (len(DIGITS) + 1))
    uni = [f"{lp:.4f}\t</s>", "-99\t<s>\t0.0", "-5.0\t<unk>"] + [f"{lp:.4f}\t{w}\t0.0" for w in DIGITS]
    bi = [f"{lp:.4f}\t<s> {w}" for w in DIGITS]
    arpa = ["\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", "", "\\1-grams:", *uni, "",
            "\\2-grams:", *bi, "", "\\end\\", ""]
    (root / "lm.arpa").write_text("\n".join(arpa))
    (root / "lexicon.txt").write_text("".join(f"{w} {' '.join(w)} <space>\n" for w in DIGITS))
    return root / "lm.arpa", root / "lexicon.txt"


@pytest.mark.slow
def test_kenlm_lexicon_decoding(finetuned):
    pytest.importorskip("flashlight.lib.text.decoder", reason="flashlight-text (KenLM decoding) not installed")
    from aqc.bin import asr_inference

    root, exp, test = finetuned["root"], finetuned["exp"], finetuned["test"]
    arpa, lexicon = write_digit_lm(root)
    out = root / "decode_kenlm"
    asr_inference.main([
        "--config", str(CONF / "decode_kenlm.yaml"), "--beam_size", "20",
        "--kenlm_file", str(arpa), "--lexicon", str(lexicon),
        "--asr_train_config", str(exp / "config.yaml"), "--asr_model_file", str(finetuned["model"]),
        "--data_path_and_name_and_type", f"{test}/wav.scp,speech,sound",
        "--ngpu", "0", "--output_dir", str(out),
    ])
    hyps = dict(line.split(maxsplit=1) if " " in line else (line, "")
                for line in (out / "1best_recog" / "text").read_text().splitlines())
    assert len(hyps) == 10
    # the lexicon restricts the output to digit words
    assert all(w in DIGITS for hyp in hyps.values() for w in hyp.split())


# ------------------------------------------------------------------- model files never run code
class _RunsCode:
    """Unpickling this (``torch.load(weights_only=False)``) runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _asr_cmd(exp_config: Path, data: Path, tokens: Path, out: Path, *extra: str):
    return ["--config", str(exp_config), "--token_list", str(tokens),
            "--train_data_path_and_name_and_type", f"{data}/wav.scp,speech,sound",
            "--train_data_path_and_name_and_type", f"{data}/text,text,text",
            "--train_shape_file", f"{data}/speech_shape",
            "--valid_data_path_and_name_and_type", f"{data}/wav.scp,speech,sound",
            "--valid_data_path_and_name_and_type", f"{data}/text,text,text",
            "--valid_shape_file", f"{data}/speech_shape",
            "--batch_bins", "60000", "--num_iters_per_epoch", "1", "--max_epoch", "1",
            "--ngpu", "0", "--num_workers", "0", "--output_dir", str(out), *extra]


def _ssl_cmd(data: Path, out: Path, *extra: str):
    return ["--config", str(CONF / "pretrain_tiny.yaml"),
            "--train_data_path_and_name_and_type", f"{data}/wav.scp,speech,sound",
            "--train_shape_file", f"{data}/speech_shape",
            "--valid_data_path_and_name_and_type", f"{data}/wav.scp,speech,sound",
            "--valid_shape_file", f"{data}/speech_shape",
            "--augmentation_conf", "background_p=0", "--batch_size", "4", "--num_iters_per_epoch", "1",
            "--max_epoch", "1", "--num_workers", "0", "--ngpu", "0", "--output_dir", str(out), *extra]


def _user_error(capsys, main, *args, **kwargs):
    """run_cli(main): the exit status and our stderr lines (ESPnet echoes its command line first)."""
    from aqc.cli import run_cli

    with pytest.raises(SystemExit) as info:
        run_cli(main, *args, **kwargs)
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.strip() and not line.startswith((sys.executable, "[nltk_data]"))]
    return info.value.code, lines


@pytest.mark.slow
def test_a_model_file_that_runs_code_is_refused_by_every_loader(finetuned, upstream_file, tmp_path, capsys):
    """A pickle whose unpickling runs a command, in every layout aqc reads, handed to every entry point that
    loads a model (ours and the ESPnet ones we wrap): each refuses it in one line and nothing runs."""
    from aqc.api import load_model
    from aqc.bin import asr_inference, asr_train, export, export_model, import_fairseq
    from aqc.checkpoints import UnsafeCheckpointError
    from aqc.espnet.ssl import AQCSSLTask
    from aqc.models.io import load_model_file

    marker = tmp_path / "code_ran"
    code = _RunsCode(marker)
    ssl_exp = tmp_path / "ssl_exp"
    ssl_exp.mkdir()
    (ssl_exp / "config.yaml").write_text("model_conf:\n  preset: tiny\n")
    files = {
        "aqc model file": tmp_path / "aqc_model.pt",
        "ESPnet aqc state": ssl_exp / "1epoch.pth",
        "ESPnet checkpoint.pth": ssl_exp / "checkpoint.pth",
        "ESPnet ASR state": tmp_path / "asr.pth",
        "fairseq checkpoint": tmp_path / "fairseq.pt",
    }
    torch.save({"format": "aqc-model", "version": 1, "config": code, "state_dict": {}}, files["aqc model file"])
    torch.save({"aqc.encoder.layer_norm.weight": code}, files["ESPnet aqc state"])
    torch.save({"model": {"aqc.encoder.layer_norm.weight": code}, "reporter": {}, "optimizers": [code],
                "schedulers": [], "scaler": None}, files["ESPnet checkpoint.pth"])
    torch.save({"ctc.ctc_lo.weight": code}, files["ESPnet ASR state"])
    torch.save({"model": {"encoder.layer_norm.weight": torch.ones(2)}, "cfg": code}, files["fairseq checkpoint"])
    # the payload is live: loading the way ESPnet and aqc used to runs it
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(files['aqc model file'])!r}, "
                    "weights_only=False)"], check=True, capture_output=True)
    assert marker.exists()
    marker.unlink()

    def refused(path, code_and_lines):
        status, lines = code_and_lines
        assert status == 2 and lines[0].startswith(f"ERROR: {path}: refused to load: the file names posix.system"), \
            lines
        assert len(lines) == 2, lines
        assert not marker.exists(), f"code ran while loading {path}"

    for name in ("aqc model file", "ESPnet aqc state", "ESPnet checkpoint.pth"):
        with pytest.raises(UnsafeCheckpointError, match="refused to load"):
            load_model_file(files[name])
        with pytest.raises(UnsafeCheckpointError, match="refused to load"):
            load_model(files[name])
        refused(files[name], _user_error(capsys, export_model._main, [
            "--ssl_exp", str(ssl_exp), "--checkpoint", str(files[name]), "--output", str(tmp_path / "out.pt")]))
        refused(files[name], _user_error(capsys, export._main, [
            "--to", "hf", "--model_file", str(files[name]), "--output_dir", str(tmp_path / "hf")]))
    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        AQCFrontend(model_file=str(files["aqc model file"]))
    assert not marker.exists()
    # fairseq checkpoints hold configuration objects: read as inert data, never run
    with pytest.raises(Exception):
        load_model(files["fairseq checkpoint"])
    status, lines = _user_error(capsys, import_fairseq._main, ["--checkpoint", str(files["fairseq checkpoint"]),
                                                              "--output", str(tmp_path / "f.pt")])
    assert status == 2 and "without a model config" in lines[0], lines  # its config was the payload, kept inert
    assert not marker.exists()

    # ESPnet's loaders, through our entry points
    data = make_digit_data(tmp_path / "data", 1, 0)
    tokens = write_token_list(tmp_path / "tokens.txt")
    exp = finetuned["exp"]
    refused(files["ESPnet aqc state"], _user_error(capsys, AQCSSLTask.main, cmd=_ssl_cmd(
        data, tmp_path / "ssl_init", "--init_param", str(files["ESPnet aqc state"]))))
    resumed = tmp_path / "ssl_resume"
    resumed.mkdir()
    shutil.copy(files["ESPnet checkpoint.pth"], resumed / "checkpoint.pth")
    refused(resumed / "checkpoint.pth", _user_error(capsys, AQCSSLTask.main, cmd=_ssl_cmd(
        data, resumed, "--resume", "true")))
    refused(files["ESPnet ASR state"], _user_error(capsys, asr_train._main, _asr_cmd(
        CONF / "finetune_tiny.yaml", data, tokens, tmp_path / "asr_init", "--frontend_conf",
        f"model_file={upstream_file}", "--init_param", str(files["ESPnet ASR state"]))))
    refused(files["aqc model file"], _user_error(capsys, asr_train._main, [
        *_asr_cmd(CONF / "finetune_tiny.yaml", data, tokens, tmp_path / "asr_frontend"),
        "--frontend_conf", f"model_file={files['aqc model file']}"]))
    refused(files["ESPnet ASR state"], _user_error(capsys, asr_inference._main, [
        "--config", str(CONF / "decode_greedy.yaml"), "--asr_train_config", str(exp / "config.yaml"),
        "--asr_model_file", str(files["ESPnet ASR state"]),
        "--data_path_and_name_and_type", f"{data}/wav.scp,speech,sound", "--ngpu", "0",
        "--output_dir", str(tmp_path / "decode")]))
    assert not marker.exists()
    # aqc's own files load that way: a fine-tuned model decodes, its epoch files load
    from aqc.checkpoints import load_checkpoint

    assert "ctc.ctc_lo.weight" in load_checkpoint(finetuned["model"])
    assert set(load_checkpoint(exp / "checkpoint.pth")) == {"model", "reporter", "optimizers", "schedulers", "scaler"}


# ----------------------------------------------------------------- fine-tuning and decoding inputs
def _write_list(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def broken_audio(tmp_path_factory):
    """A small 16 kHz digit set plus a missing, an empty and a NaN file."""
    import numpy as np
    import soundfile as sf

    root = tmp_path_factory.mktemp("broken")
    good = make_digit_data(root / "good", 1, 0)
    wave, _ = sf.read(next(iter(sorted((good / "wav").glob("*.wav")))), dtype="float32")
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = wave.copy()
    nan[100:120] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    return good, {"missing": root / "missing.wav", "empty": root / "empty.wav", "nan": root / "nan.wav"}


def _with_bad_files(good: Path, out: Path, bad, names) -> Path:
    scp = (good / "wav.scp").read_text().splitlines() + [f"bad-{n} {bad[n]}" for n in names]
    text = (good / "text").read_text().splitlines() + [f"bad-{n} one" for n in names]
    shape = (good / "speech_shape").read_text().splitlines() + [f"bad-{n} 16000" for n in names]
    _write_list(out / "wav.scp", sorted(scp))
    _write_list(out / "text", sorted(text))
    _write_list(out / "speech_shape", sorted(shape))
    return out


@pytest.mark.slow
def test_decoding_refuses_missing_empty_and_nan_audio_by_name(finetuned, broken_audio, tmp_path, capsys):
    from aqc.bin import asr_inference

    good, bad = broken_audio
    data = _with_bad_files(good, tmp_path / "test", bad, ["missing", "empty", "nan"])
    exp = finetuned["exp"]
    status, lines = _user_error(capsys, asr_inference._main, [
        "--config", str(CONF / "decode_greedy.yaml"), "--asr_train_config", str(exp / "config.yaml"),
        "--asr_model_file", str(finetuned["model"]), "--data_path_and_name_and_type", f"{data}/wav.scp,speech,sound",
        "--ngpu", "0", "--output_dir", str(tmp_path / "decode")])
    assert status == 2 and lines[0] == "ERROR: 3 audio file(s) cannot be used; decoding did not start:", lines
    report = "\n".join(lines)
    assert f"bad-missing {bad['missing']}: does not exist" in report
    assert f"bad-empty {bad['empty']}: has zero samples" in report
    assert f"bad-nan {bad['nan']}: has 20 NaN/Inf sample(s)" in report
    assert len(lines) < 10 and not (tmp_path / "decode" / "1best_recog").exists()


def test_a_worker_error_whose_text_cannot_be_built_is_still_one_line(capsys):
    """DataLoader workers re-raise ``type(message)``: for soundfile's LibsndfileError(code) ``str()`` itself
    raises, which used to crash the error handler."""
    import soundfile as sf

    def from_worker():
        raise sf.LibsndfileError("Caught LibsndfileError in DataLoader worker process 0.\nOriginal Traceback (most "
                                 "recent call last):\n  File \"x.py\", line 1, in f\nsoundfile.LibsndfileError: "
                                 "Error opening '/data/gone.wav': System error.")

    status, lines = _user_error(capsys, from_worker)
    assert status == 2 and lines[0] == "ERROR: audio file not found: /data/gone.wav", lines


@pytest.mark.slow
def test_fine_tuning_checks_its_inputs_before_training(upstream_file, broken_audio, tmp_path, capsys):
    from aqc.bin import asr_train

    good, bad = broken_audio
    tokens = write_token_list(tmp_path / "tokens.txt")
    cmd = [*_asr_cmd(CONF / "finetune_tiny.yaml", good, tokens, tmp_path / "exp"),
           "--frontend_conf", f"model_file={upstream_file}"]
    # a missing audio file: one line naming it, before ESPnet starts
    data = _with_bad_files(good, tmp_path / "train", bad, ["missing"])
    broken = [c.replace(str(good), str(data)) if c.startswith(str(good)) and "speech_shape" not in c else c
              for c in cmd]
    status, lines = _user_error(capsys, asr_train._main, broken)
    assert status == 2 and lines[0] == "ERROR: 1 audio file(s) cannot be used; fine-tuning did not start:", lines
    assert any(f"bad-missing {bad['missing']}: does not exist" in line for line in lines)
    assert not (tmp_path / "exp").exists()
    # a text without one of the audio's utterances (ESPnet: a KeyError at the first batch)
    short_text = _write_list(tmp_path / "short" / "text", (good / "text").read_text().splitlines()[1:])
    mismatched = [c.replace(f"{good}/text", str(short_text)) for c in cmd]
    status, lines = _user_error(capsys, asr_train._main, mismatched)
    assert status == 2 and lines[0].startswith(f"ERROR: the train lists disagree: 1 utterance(s) of {good}/wav.scp "
                                               f"are not in {short_text}"), lines
    assert "utils/fix_data_dir.py" in lines[0]
    # a value of the wrong type in the config, and --ngpu without a GPU
    import yaml

    conf = yaml.safe_load((CONF / "finetune_tiny.yaml").read_text())
    conf["optim_conf"]["lr"] = "fast"
    bad_conf = tmp_path / "finetune_fast.yaml"
    bad_conf.write_text(yaml.safe_dump(conf))
    status, lines = _user_error(capsys, asr_train._main, [c if c != str(CONF / "finetune_tiny.yaml") else str(bad_conf)
                                                          for c in cmd])
    assert status == 2 and lines[0].startswith(f"ERROR: {bad_conf}: optim_conf.lr is 'fast' (str)"), lines
    # a config file's plot_every_epochs is a parser default, which argparse's own check does not see
    for every in (0, 2.5):
        conf = yaml.safe_load((CONF / "finetune_tiny.yaml").read_text())
        conf["plot_every_epochs"] = every
        bad_conf.write_text(yaml.safe_dump(conf))
        status, lines = _user_error(capsys, asr_train._main, [c if c != str(CONF / "finetune_tiny.yaml")
                                                              else str(bad_conf) for c in cmd])
        assert status == 2 and lines[0].startswith(
            f"ERROR: {bad_conf}: --plot_every_epochs {every!r}: expected a whole number of epochs, 1 or more"), lines
    if not torch.cuda.is_available():
        status, lines = _user_error(capsys, asr_train._main, [*cmd, "--ngpu", "1"])
        assert status == 2 and "Fix: --ngpu 0 runs on the CPU" in lines[0], lines
    assert not (tmp_path / "exp").exists()


TRAINING_CONFIGS = sorted(p for p in REPO.glob("egs/*/conf/*.yaml") if not p.name.startswith("decode"))


@pytest.mark.parametrize("config", TRAINING_CONFIGS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_recipe_configs_pass_the_type_checks(config):
    """The configuration type checks accept every config we ship (no false alarms), and the right task
    parses each."""
    import yaml

    from aqc.espnet.asr_task import AQCASRTask
    from aqc.espnet.preflight import check_conf_types
    from aqc.espnet.ssl import AQCSSLTask

    if yaml.safe_load(config.read_text()).get("model") == "aqc":
        task, extra = AQCSSLTask, []
    else:
        task, extra = AQCASRTask, ["--token_list", "tokens.txt"]
    args = task.get_parser().parse_args(["--config", str(config), "--output_dir", "exp", *extra])
    before = {k: dict(v) for k, v in vars(args).items() if k.endswith("_conf") and isinstance(v, dict)}
    check_conf_types(task, args)
    assert {k: dict(v) for k, v in vars(args).items() if k.endswith("_conf") and isinstance(v, dict)} == before
