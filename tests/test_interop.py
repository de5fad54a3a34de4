"""Interop (issue 8): Hugging Face and s3prl export, fairseq import, the Python API."""
import argparse
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from aqc.api import extract_features, load_model, load_waveform
from aqc.interop import (CheckpointReadError, HFExportError, UnsupportedCheckpointError, build_hf_model, export_hf,
                         export_s3prl, import_fairseq_checkpoint, read_checkpoint)
from aqc.interop.fairseq import config_from_fairseq, config_to_fairseq, parse_conv_layers
from aqc.interop.keymap import hf_rules, is_inference_key, map_key
from aqc.models import TINY_OVERRIDES, Data2VecAQC, Data2VecAQCConfig, data2vec_aqc_base, data2vec_aqc_tiny
from aqc.models.io import load_model_file, save_model_file

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LIBRI = DATA / "librispeech_unlabeled" / "train-clean-100"
FLAC_A = LIBRI / "248" / "130644" / "248-130644-0000.flac"
FLAC_B = LIBRI / "909" / "131041" / "909-131041-0000.flac"
FSDD_WAV = DATA / "fsdd" / "recordings" / "0_george_0.wav"
TOL = 1e-5

needs_data = pytest.mark.skipif(not FLAC_A.is_file(), reason=f"test data not found under {DATA}")


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny() -> Data2VecAQC:
    """A tiny model whose teacher differs from its student (as after EMA updates)."""
    torch.manual_seed(0)
    model = data2vec_aqc_tiny()
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.set_num_updates(123)
    return model.eval()


@pytest.fixture(scope="module")
def speech():
    """Two real utterances of different lengths (3.0 s and 2.1 s), normalised as in pre-training."""
    a = load_waveform(FLAC_A)[:48000]
    b = load_waveform(FLAC_B)[16000:16000 + 33600]
    return a, b


@pytest.fixture(scope="module")
def hf_dir(tiny, tmp_path_factory):
    return export_hf(tiny, tmp_path_factory.mktemp("hf") / "tiny")


def _features(model, wav, lengths=None):
    with torch.no_grad():
        states, frames = model.extract_features(wav, lengths)
    return states, frames


def _assert_close(a, b, tol=TOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = float((a - b).abs().max())
    assert diff <= tol, diff


def _same_weights(model, **overrides) -> Data2VecAQC:
    other = Data2VecAQC(Data2VecAQCConfig.from_dict({**model.config.to_dict(), **overrides}))
    other.load_state_dict(model.state_dict())
    return other.eval()


# -------------------------------------------------------------------------------------- Hugging Face
@needs_data
def test_hf_export_layout_and_config(tiny, hf_dir):
    assert {p.name for p in hf_dir.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    cfg = json.loads((hf_dir / "config.json").read_text())
    c = tiny.config
    assert cfg["model_type"] == "data2vec-audio"
    assert cfg["conv_dim"] == [ch for ch, _, _ in c.conv_layers]
    assert cfg["conv_kernel"] == [k for _, k, _ in c.conv_layers]
    assert cfg["conv_stride"] == [s for _, _, s in c.conv_layers]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"]) == (
        c.embed_dim, c.num_layers, c.num_heads, c.ffn_dim)
    assert (cfg["conv_pos_kernel_size"], cfg["num_conv_pos_embeddings"], cfg["num_conv_pos_embedding_groups"]) == (
        c.pos_conv_kernel, c.pos_conv_depth, c.pos_conv_groups)
    assert cfg["conv_bias"] is False and cfg["layer_norm_eps"] == 1e-5
    pre = json.loads((hf_dir / "preprocessor_config.json").read_text())
    assert pre["sampling_rate"] == 16000 and pre["do_normalize"] is True and pre["return_attention_mask"] is True

    from safetensors.torch import load_file

    weights = load_file(str(hf_dir / "model.safetensors"))
    inference = {k: v for k, v in tiny.state_dict().items() if is_inference_key(k)}
    assert len(weights) == len(inference)
    assert sum(v.numel() for v in weights.values()) == sum(v.numel() for v in inference.values())
    assert not any(k.startswith(("teacher", "quantizer", "final_proj", "contr_proj", "_ema")) for k in weights)


@needs_data
def test_hf_hidden_states_equal_aqc_features_single_utterance(tiny, hf_dir, speech):
    from transformers import Data2VecAudioModel

    hf = Data2VecAudioModel.from_pretrained(hf_dir).eval()
    for wav in speech:
        ours, _ = _features(tiny, wav[None])
        with torch.no_grad():
            theirs = hf(wav[None], attention_mask=torch.ones(1, wav.numel(), dtype=torch.long),
                        output_hidden_states=True).hidden_states
        assert len(theirs) == tiny.config.num_layers + 1
        for a, b in zip(ours, theirs):
            _assert_close(a, b)


@needs_data
def test_hf_padded_batch(tiny, hf_dir, speech):
    """transformers zeroes padding only before the first positional conv block: on a padded batch it
    equals aqc with pos_conv_mask_padding=False; aqc's default agrees on the unpadded row and, in the
    encoder input, on the frames the padding cannot reach."""
    from transformers import Data2VecAudioModel

    hf = Data2VecAudioModel.from_pretrained(hf_dir).eval()
    a, b = speech
    batch = torch.nn.utils.rnn.pad_sequence([a, b], batch_first=True)
    lengths = torch.tensor([a.numel(), b.numel()])
    mask = (torch.arange(batch.shape[1])[None] < lengths[:, None]).long()
    with torch.no_grad():
        theirs = hf(batch, attention_mask=mask, output_hidden_states=True).hidden_states

    reference, frames = _features(_same_weights(tiny, pos_conv_mask_padding=False), batch, lengths)
    for a_state, b_state in zip(reference, theirs):
        for row, n in enumerate(frames.tolist()):
            _assert_close(a_state[row, :n], b_state[row, :n])

    ours, _ = _features(tiny, batch, lengths)  # aqc default: pos_conv_mask_padding=True
    for a_state, b_state in zip(ours, theirs):
        _assert_close(a_state[0], b_state[0])  # the longest row has no padding
    c = tiny.config
    reach = (c.pos_conv_depth - 1) * (c.pos_conv_kernel // 2)  # frames later blocks see the padding from
    n = int(frames[1])
    _assert_close(ours[0][1, :n - reach], theirs[0][1, :n - reach])
    assert float((ours[0][1, n - reach:n] - theirs[0][1, n - reach:n]).abs().max()) > TOL  # the documented gap


def test_hf_refuses_group_norm():
    model = data2vec_aqc_tiny(extractor_mode="group_norm")
    with pytest.raises(HFExportError, match="group_norm"):
        build_hf_model(model)


def test_hf_base_parameter_count_and_coverage():
    torch.manual_seed(1)
    model = data2vec_aqc_base().eval()
    hf = build_hf_model(model)
    assert sum(p.numel() for p in hf.parameters()) == 93_164_288
    ours = model.state_dict()
    inverse = {map_key(k, hf_rules()): k for k in ours if is_inference_key(k)}
    hf_state = hf.state_dict()
    assert set(hf_state) == set(inverse)  # every HF tensor has an aqc source, and the reverse
    for name, tensor in hf_state.items():
        assert torch.equal(tensor, ours[inverse[name]]), name  # filled from aqc, none left at init
    wav = torch.randn(1, 16000)
    states, _ = _features(model, wav)
    with torch.no_grad():
        theirs = hf(wav, output_hidden_states=True).hidden_states
    _assert_close(states[-1], theirs[-1], 1e-4)


@needs_data
def test_load_model_reads_hf_folder(tiny, hf_dir, speech):
    loaded = load_model(hf_dir)
    assert loaded.quantizer is None
    for a, b in zip(_features(tiny, speech[1][None])[0], _features(loaded, speech[1][None])[0]):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------ fairseq
def _fairseq_encoder(state, src: str, dst: str, config) -> dict:
    """Our encoder tensors under fairseq TransformerEncoder names (written out independently of
    aqc.interop's rules, so the test checks them)."""
    out = {}
    for i in range(config.pos_conv_depth):
        for p in ("weight", "bias"):
            out[f"{dst}pos_conv.{i}.0.{p}"] = state[f"{src}pos_conv.layers.{i}.conv.{p}"]
    for p in ("weight", "bias"):
        out[f"{dst}layer_norm.{p}"] = state[f"{src}layer_norm.{p}"]
    for i in range(config.num_layers):
        for p in ("weight", "bias"):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                out[f"{dst}layers.{i}.self_attn.{proj}.{p}"] = state[f"{src}layers.{i}.self_attn.{proj}.{p}"]
            out[f"{dst}layers.{i}.self_attn_layer_norm.{p}"] = state[f"{src}layers.{i}.self_attn_layer_norm.{p}"]
            out[f"{dst}layers.{i}.fc1.{p}"] = state[f"{src}layers.{i}.feed_forward.fc1.{p}"]
            out[f"{dst}layers.{i}.fc2.{p}"] = state[f"{src}layers.{i}.feed_forward.fc2.{p}"]
            out[f"{dst}layers.{i}.final_layer_norm.{p}"] = state[f"{src}layers.{i}.final_layer_norm.{p}"]
    return out


def _fairseq_model_state(model, with_quantizer=True, with_ema=True) -> dict:
    c, s = model.config, model.state_dict()
    out = {"mask_emb": s["mask_emb"]}
    for i in range(len(c.conv_layers)):
        out[f"feature_extractor.conv_layers.{i}.0.weight"] = s[f"feature_extractor.conv_layers.{i}.conv.weight"]
        for p in ("weight", "bias"):
            out[f"feature_extractor.conv_layers.{i}.2.1.{p}"] = s[f"feature_extractor.conv_layers.{i}.layer_norm.{p}"]
    for p in ("weight", "bias"):
        out[f"layer_norm.{p}"] = s[f"feature_projection.layer_norm.{p}"]
        out[f"post_extract_proj.{p}"] = s[f"feature_projection.projection.{p}"]
        out[f"final_proj.{p}"] = s[f"final_proj.{p}"]
    out.update(_fairseq_encoder(s, "encoder.", "encoder.", c))
    if with_quantizer:
        out["quantizer.vars"] = s["quantizer.codevectors"]
        for p in ("weight", "bias"):
            out[f"quantizer.weight_proj.{p}"] = s[f"quantizer.weight_proj.{p}"]
            out[f"project_q.{p}"] = s[f"quantizer.project_q.{p}"]
            out[f"contr_proj.{p}"] = s[f"contr_proj.{p}"]
    if with_ema:
        out["_ema"] = _fairseq_encoder(s, "teacher.encoder.", "", c)
    return {k: (v.clone() if isinstance(v, torch.Tensor) else {kk: vv.clone() for kk, vv in v.items()})
            for k, v in out.items()}


def _fairseq_model_cfg(model, name="data2vec_audio") -> dict:
    """A cfg["model"] as the data2vec-aqc fork's base_librispeech.yaml + Wav2Vec2Config defaults, at tiny size."""
    c = model.config
    return {
        "_name": name, "extractor_mode": "layer_norm", "encoder_layers": c.num_layers,
        "encoder_embed_dim": c.embed_dim, "encoder_ffn_embed_dim": c.ffn_dim, "encoder_attention_heads": c.num_heads,
        "activation_fn": "gelu", "layer_type": "transformer", "dropout": 0.1, "attention_dropout": 0.1,
        "activation_dropout": 0.0, "encoder_layerdrop": 0.05, "dropout_input": 0.0, "dropout_features": 0.0,
        "final_dim": 0, "layer_norm_first": False,
        "conv_feature_layers": "[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64,2,2)] + [(64,2,2)]",
        "conv_bias": False, "logit_temp": 0.1, "feature_grad_mult": 1.0, "quantizer_depth": 1,
        "latent_vars": c.latent_vars, "latent_groups": c.latent_groups, "latent_dim": 0,
        "final_proj_dim": c.codebook_dim, "mask_length": 10, "mask_prob": 0.65, "mask_selection": "static",
        "num_negatives": c.num_negatives, "cross_sample_negatives": 0,
        "conv_pos": c.pos_conv_kernel * c.pos_conv_depth, "conv_pos_groups": c.pos_conv_groups,
        "pos_conv_depth": c.pos_conv_depth, "latent_temp": [2.0, 0.5, 0.999995], "required_seq_len_multiple": 2,
        "cluster_factor": 16, "scale_factor": 0.3, "loss_beta": 0, "loss_scale": None,
        "average_top_k_layers": c.top_k_layers, "instance_norm_target_layer": True, "ema_decay": 0.999,
        "ema_end_decay": 0.9999, "ema_anneal_end_step": "${optimization.max_update}",
        "ema_transformer_only": True, "ema_layers_only": True, "min_target_var": 0.1, "min_pred_var": 0.01,
    }


def _fairseq_checkpoint(model, **kw) -> dict:
    return {
        "args": None,
        "cfg": {"_name": None, "common": {"fp16": True}, "task": {"_name": "audio_pretraining", "normalize": True},
                "optimization": {"max_update": 400000, "lr": [0.0005]}, "model": _fairseq_model_cfg(model)},
        "model": _fairseq_model_state(model, **kw),
        "optimizer_history": [{"criterion_name": "ModelCriterion", "num_updates": 123}],
        "extra_state": {"epoch": 3, "train_iterator": {"epoch": 3}},
    }


@needs_data
def test_import_fairseq_aqc_checkpoint_identical(tiny, tmp_path, speech):
    path = tmp_path / "checkpoint_last.pt"
    torch.save(_fairseq_checkpoint(tiny), path)
    model, report = import_fairseq_checkpoint(path)
    assert report.architecture == "data2vec-aqc" and report.num_updates == 123
    assert report.dropped == {} and report.initialised == {}
    assert model.config.ema_anneal_end_step == 400000  # ${optimization.max_update} resolved
    assert model.config.conv_layers == tiny.config.conv_layers
    source = tiny.state_dict()
    for key, value in model.state_dict().items():
        if key != "_extra_state":
            assert torch.equal(value, source[key]), key  # student, teacher (from _ema) and quantizer
    for a, b in zip(_features(tiny, speech[0][None])[0], _features(model.eval(), speech[0][None])[0]):
        assert torch.equal(a, b)


@needs_data
def test_import_old_data2vec_checkpoint_with_namespace(tiny, tmp_path, speech):
    """Pre-hydra layout (argparse.Namespace args), plain data2vec: no quantizer, no EMA teacher."""
    args = argparse.Namespace(arch="data2vec_audio", **{k: v for k, v in _fairseq_model_cfg(tiny).items()
                                                        if k not in ("_name", "ema_anneal_end_step")})
    path = tmp_path / "old.pt"
    state = _fairseq_model_state(tiny, with_quantizer=False, with_ema=False)
    state["target_glu.0.weight"] = torch.zeros(2)  # a wav2vec 2.0 module aqc has no place for
    torch.save({"args": args, "model": state, "optimizer_history": [{"num_updates": 5}]}, path)
    model, report = import_fairseq_checkpoint(path)
    assert report.architecture == "data2vec" and model.quantizer is None and not model.config.use_clustering
    assert report.dropped == {"target_glu.0.weight": "no counterpart in aqc's model"}
    assert "teacher.*" in report.initialised
    student = model.encoder.state_dict()
    for key, value in model.teacher.encoder.state_dict().items():
        assert torch.equal(value, student[key])
    for a, b in zip(_features(tiny, speech[1][None])[0], _features(model.eval(), speech[1][None])[0]):
        assert torch.equal(a, b)

    fresh, fresh_report = import_fairseq_checkpoint(path, add_quantizer=True)
    assert fresh.quantizer is not None and "quantizer.*, contr_proj.*" in fresh_report.initialised


def test_import_reads_omegaconf_without_omegaconf_or_fairseq(tiny, tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    ckpt = _fairseq_checkpoint(tiny)
    ckpt["cfg"] = omegaconf.OmegaConf.create(ckpt["cfg"])
    ckpt["model"]["_ema"]["encoder_extra.weight"] = torch.zeros(1)
    path = tmp_path / "hydra.pt"
    torch.save(ckpt, path)
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('omegaconf', 'fairseq', 'hydra'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from aqc.bin.import_fairseq import main\n"
        f"sys.exit(main(['--checkpoint', {str(path)!r}, '--output', {str(tmp_path / 'out.pt')!r}]))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "architecture: data2vec-aqc" in run.stdout
    assert "dropped _ema.encoder_extra.weight: EMA entry with no counterpart in aqc's teacher" in run.stdout
    imported = load_model_file(tmp_path / "out.pt")
    teacher = tiny.teacher.encoder.state_dict()
    for key, value in imported.teacher.encoder.state_dict().items():
        assert torch.equal(value, teacher[key]), key


def test_import_refuses_unknown_architecture_and_corrupt_files(tiny, tmp_path):
    ckpt = _fairseq_checkpoint(tiny)
    ckpt["cfg"]["model"]["_name"] = "wav2vec2"
    torch.save(ckpt, tmp_path / "w2v.pt")
    with pytest.raises(UnsupportedCheckpointError, match="unsupported architecture 'wav2vec2'"):
        import_fairseq_checkpoint(tmp_path / "w2v.pt")
    ckpt["cfg"]["model"].update(_name="data2vec_audio", pos_conv_depth=1, conv_pos=128)
    torch.save(ckpt, tmp_path / "depth1.pt")
    with pytest.raises(UnsupportedCheckpointError, match="pos_conv_depth=1"):
        import_fairseq_checkpoint(tmp_path / "depth1.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UnsupportedCheckpointError, match="not a fairseq checkpoint"):
        import_fairseq_checkpoint(tmp_path / "other.pt")
    (tmp_path / "corrupt.pt").write_bytes(os.urandom(256))
    with pytest.raises(CheckpointReadError, match="cannot read"):
        import_fairseq_checkpoint(tmp_path / "corrupt.pt")
    from aqc.bin.import_fairseq import main

    with pytest.raises(SystemExit) as info:  # a user error: one line, exit status 2
        main(["--checkpoint", str(tmp_path / "corrupt.pt"), "--output", str(tmp_path / "x.pt")])
    assert info.value.code == 2 and not (tmp_path / "x.pt").exists()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch should_not_exist",))


def test_restricted_reader_runs_no_code_from_the_file(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "payload": _Evil()}, path, pickle_module=pickle)
    obj = read_checkpoint(path)
    assert torch.equal(obj["model"]["w"], torch.ones(1))
    assert obj["payload"] == "touch should_not_exist"  # os.system was never resolved: only inert data
    assert not (tmp_path / "should_not_exist").exists() and not Path("should_not_exist").exists()
    with pytest.raises(UnsupportedCheckpointError):
        parse_conv_layers("__import__('os').system('true')")


@pytest.mark.parametrize("overrides", [TINY_OVERRIDES, {}], ids=["tiny", "base"])
def test_fairseq_config_round_trip(overrides):
    config = Data2VecAQCConfig(**overrides)
    back, notes = config_from_fairseq(config_to_fairseq(config), has_quantizer=config.use_quantizer)
    assert notes == []
    for name in ("conv_layers", "extractor_mode", "conv_bias", "embed_dim", "ffn_dim", "num_layers", "num_heads",
                 "dropout", "attention_dropout", "activation_dropout", "layerdrop", "pos_conv_kernel",
                 "pos_conv_groups", "pos_conv_depth", "mask_prob", "mask_length", "top_k_layers", "latent_vars",
                 "latent_groups", "codebook_dim", "latent_temp", "num_negatives", "cluster_factor", "scale_factor",
                 "ema_decay", "ema_end_decay", "ema_anneal_end_step", "loss_beta", "loss_scale"):
        assert getattr(back, name) == getattr(config, name), name


# -------------------------------------------------------------------------------------------- s3prl
@needs_data
def test_s3prl_checkpoint_layout_and_round_trip(tiny, tmp_path, speech):
    path = export_s3prl(tiny, tmp_path / "s3prl_data2vec.pt")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # what s3prl's torch.load does
    assert {"task_cfg", "model_cfg", "model_weight"} <= set(ckpt)
    assert ckpt["task_cfg"]["normalize"] is True and ckpt["task_cfg"]["sample_rate"] == 16000
    cfg = ckpt["model_cfg"]
    assert cfg["_name"] == "data2vec_audio" and cfg["extractor_mode"] == "layer_norm"
    assert parse_conv_layers(cfg["conv_feature_layers"]) == tiny.config.conv_layers
    assert max(3, cfg["conv_pos"] // cfg["pos_conv_depth"]) == tiny.config.pos_conv_kernel  # fairseq's kernel rule
    # s3prl deletes _ema, drops final_proj and loads strictly: exactly the encoder under fairseq names
    expected = _fairseq_model_state(tiny, with_quantizer=False)
    expected.pop("final_proj.weight"), expected.pop("final_proj.bias")
    weights = ckpt["model_weight"]
    assert set(weights) == set(expected)
    assert set(weights["_ema"]) == set(expected["_ema"])
    for key, value in weights.items():
        if key != "_ema":
            assert torch.equal(value, expected[key]), key
    for key, value in weights["_ema"].items():
        assert torch.equal(value, expected["_ema"][key]), key

    model, report = import_fairseq_checkpoint(path)
    assert report.num_updates == 123 and "final_proj.*" in report.initialised
    for a, b in zip(_features(tiny, speech[0][None])[0], _features(model.eval(), speech[0][None])[0]):
        assert torch.equal(a, b)
    teacher = tiny.teacher.encoder.state_dict()
    for key, value in model.teacher.encoder.state_dict().items():
        assert torch.equal(value, teacher[key]), key


def test_s3prl_loader_accepts_export_when_installed(tiny, tmp_path):
    pytest.importorskip("s3prl")
    from s3prl.upstream.data2vec.convert import load_converted_model

    path = export_s3prl(tiny, tmp_path / "s3prl_data2vec.pt")
    model, task_cfg = load_converted_model(str(path))
    assert task_cfg.normalize is True and len(model.encoder.layers) == tiny.config.num_layers


@needs_data
def test_s3prl_own_loader_gives_aqcs_hidden_states(tiny, tmp_path, speech):
    """s3prl's data2vec model, loaded by s3prl from our export, computes the same hidden states as aqc."""
    pytest.importorskip("s3prl")
    from s3prl.upstream.data2vec.convert import load_converted_model

    model, _ = load_converted_model(str(export_s3prl(tiny, tmp_path / "s3prl_data2vec.pt")))
    model.eval()
    wav = speech[0][None]
    with torch.no_grad():
        theirs = model.extract_features(wav, torch.zeros_like(wav, dtype=torch.bool))
    ours, _ = _features(tiny.eval(), wav)
    _assert_close(theirs["x"], ours[-1])
    layers = [result[0] if isinstance(result, tuple) else result for result in theirs["layer_results"]]
    assert len(layers) == tiny.config.num_layers
    for i, state in enumerate(layers):
        state = state.transpose(0, 1) if state.shape[0] != wav.shape[0] else state  # fairseq layers are T x B x C
        _assert_close(state, ours[i + 1])


# ---------------------------------------------------------------------------------------------- API
@needs_data
def test_api_reads_resamples_downmixes_and_selects_layers(tiny, tmp_path):
    data, rate = sf.read(str(FSDD_WAV), dtype="float32")
    assert rate == 8000
    feats = extract_features(tiny, [FSDD_WAV, str(FLAC_A)], layers=[0, -1])
    assert len(feats) == 2 and feats[0].shape[0] == 2 and feats[0].shape[-1] == tiny.config.embed_dim

    from aqc.augment import normalize
    import torchaudio.functional as AF

    wav = torch.from_numpy(normalize(AF.resample(torch.from_numpy(data), 8000, 16000).numpy()))
    states, _ = _features(tiny, wav[None])
    assert torch.equal(feats[0][0], states[0][0]) and torch.equal(feats[0][1], states[-1][0])
    assert torch.equal(extract_features(tiny, data, sample_rate=8000, layers=[-1])[0][0], states[-1][0])

    mono, rate = sf.read(str(FLAC_A), dtype="float32", frames=24000)
    sf.write(str(tmp_path / "stereo.wav"), np.stack([mono, mono], axis=1), rate)
    sf.write(str(tmp_path / "mono.wav"), mono, rate)
    stereo_feats, mono_feats = extract_features(tiny, [tmp_path / "stereo.wav", tmp_path / "mono.wav"])
    assert stereo_feats.shape[0] == tiny.config.num_layers + 1
    _assert_close(stereo_feats, mono_feats)
    with pytest.raises(ValueError, match="out of range"):
        extract_features(tiny, mono, layers=[tiny.config.num_layers + 1])


@needs_data
def test_export_cli_and_load_model_on_every_format(tiny, tmp_path, speech):
    from aqc.bin.export import main

    model_file = tmp_path / "aqc_model.pt"
    save_model_file(tiny, model_file)
    assert main(["--to", "hf", "--model_file", str(model_file), "--output_dir", str(tmp_path / "hf")]) == 0
    assert main(["--to", "s3prl", "--model_file", str(model_file), "--output_dir", str(tmp_path / "s3")]) == 0
    torch.save(_fairseq_checkpoint(tiny), tmp_path / "fairseq.pt")
    espnet = tmp_path / "exp" / "ssl_tiny"  # ESPnet's SSL checkpoint: aqc.* keys, config.yaml beside it
    espnet.mkdir(parents=True)
    torch.save({"aqc." + k: v for k, v in tiny.state_dict().items()}, espnet / "valid.loss.best.pth")
    (espnet / "config.yaml").write_text("model_conf:\n  preset: tiny\n")
    reference = _features(tiny, speech[1][None])[0][-1]
    for path in (model_file, tmp_path / "hf", tmp_path / "s3" / "s3prl_data2vec.pt", tmp_path / "fairseq.pt",
                 espnet / "valid.loss.best.pth"):
        assert torch.equal(_features(load_model(path), speech[1][None])[0][-1], reference), path
    gn_file = tmp_path / "gn.pt"
    save_model_file(data2vec_aqc_tiny(extractor_mode="group_norm"), gn_file)
    with pytest.raises(SystemExit) as info:
        main(["--to", "hf", "--model_file", str(gn_file), "--output_dir", str(tmp_path / "gn")])
    assert info.value.code == 2
