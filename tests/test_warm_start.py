"""Continued pre-training from a released model (--init_upstream): what is loaded, what starts afresh."""
import argparse

import pytest
import torch
from test_interop import _fairseq_checkpoint

from aqc.cli import AQCUserError
from aqc.espnet.ssl import AQCSSLTask
from aqc.interop import export_hf
from aqc.models import data2vec_aqc_tiny
from aqc.models.io import save_model_file


@pytest.fixture(scope="module")
def released():
    """A tiny model as after training: a teacher that differs from its student, 77 updates."""
    torch.manual_seed(5)
    model = data2vec_aqc_tiny()
    with torch.no_grad():
        for p in model.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.set_num_updates(77)
    return model


def _build(init_upstream, preset="tiny"):
    args = argparse.Namespace(model="aqc", model_conf={"preset": preset}, init_upstream=str(init_upstream))
    torch.manual_seed(123)  # the run's own initialisation differs from the file's
    return AQCSSLTask.build_model(args).aqc


def _part(model, prefix):
    return {k[len(prefix):]: v for k, v in model.state_dict().items() if k.startswith(prefix)}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_from_an_aqc_model_file_everything_but_the_counter(released, tmp_path, caplog):
    path = tmp_path / "released.pt"
    save_model_file(released, path)
    with caplog.at_level("INFO"):
        model = _build(path)
    # the weights before the first update are the file's, teacher and quantizer included
    for prefix in ("feature_extractor.", "encoder.", "teacher.", "quantizer.", "final_proj."):
        assert _equal(_part(model, prefix), _part(released, prefix)), prefix
    from aqc.models.quantizer import gumbel_temperature_at

    assert model.num_updates == 0
    assert model.quantizer.temperature == gumbel_temperature_at(0, model.quantizer.latent_temp)
    said = caplog.text
    assert f"continued pre-training from {path}" in said and "teacher: the file's EMA teacher" in said
    assert "reset: optimizer, scheduler, update counter (the file was at update 77" in said


def test_from_a_hugging_face_folder_the_teacher_is_the_student(released, tmp_path, caplog):
    folder = export_hf(released, tmp_path / "hf")
    with caplog.at_level("INFO"):
        model = _build(folder)
    for prefix in ("feature_extractor.", "encoder."):
        assert _equal(_part(model, prefix), _part(released, prefix)), prefix
    assert _equal(_part(model, "teacher.encoder."), _part(released, "encoder."))
    # a Hugging Face folder has no quantizer: this run's own initialisation, said so
    torch.manual_seed(123)
    fresh = data2vec_aqc_tiny()
    assert _equal(_part(model, "quantizer."), _part(fresh, "quantizer."))
    assert "teacher: a copy of the student (the file has no teacher)" in caplog.text
    assert "initialised afresh: quantizer" in caplog.text


def test_from_a_fairseq_checkpoint(released, tmp_path, caplog):
    path = tmp_path / "checkpoint_best.pt"
    torch.save(_fairseq_checkpoint(released), path)
    with caplog.at_level("INFO"):
        model = _build(path)
    for prefix in ("feature_extractor.", "encoder.", "teacher."):
        assert _equal(_part(model, prefix), _part(released, prefix)), prefix
    assert "the file was at update 123" in caplog.text and model.num_updates == 0


def test_an_architecture_mismatch_names_both(released, tmp_path):
    path = tmp_path / "tiny.pt"
    save_model_file(released, path)
    with pytest.raises(AQCUserError) as info:
        _build(path, preset="base")
    message = str(info.value)
    assert f"--init_upstream {path}: the file's architecture (embed_dim 64" in message
    assert "is not this run's model_conf (embed_dim 768, ffn_dim 3072, num_layers 12, num_heads 12" in message
    assert "Fix: a model_conf of the file's size" in message
    with pytest.raises(AQCUserError, match="no such file or folder"):
        _build(tmp_path / "missing.pt")
