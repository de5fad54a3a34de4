"""Continued pre-training: start a run's model from a released one (``aqc.bin.ssl_train --init_upstream``).

Any model aqc reads (:func:`aqc.api.load_model`): an aqc model file or ESPnet aqc checkpoint, a Hugging
Face ``Data2VecAudio`` folder, a fairseq data2vec or data2vec-aqc checkpoint. The weights come from the
file, the EMA teacher too where the file has one (otherwise the importer made it a copy of the student);
what the file lacks (a data2vec checkpoint's quantizer, a Hugging Face folder's ``final_proj``) keeps this
run's fresh initialisation. The optimizer, the scheduler and the update counter start afresh (the
counter drives the EMA decay and the Gumbel temperature: set ``ema_decay``/``latent_temp`` in
``model_conf`` for where a continued run should start). The architecture must be the run's own: a
``model_conf`` of another size stops with both named.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import torch

from aqc.cli import AQCUserError
from aqc.models import Data2VecAQC

EXTRA_STATE_SUFFIX = "_extra_state"
SHAPE_FIELDS = ("embed_dim", "ffn_dim", "num_layers", "num_heads")


def _sizes(model: Data2VecAQC) -> str:
    c = model.config
    return ", ".join(f"{name} {getattr(c, name)}" for name in SHAPE_FIELDS) + \
        f", {len(c.conv_layers)} conv layers of {c.conv_layers[0][0]} channels"


def _group(key: str) -> str:
    if key.startswith("teacher."):
        return "teacher"
    if key.startswith(("quantizer.", "contr_proj.")):
        return "quantizer"
    if key.startswith("final_proj."):
        return "final_proj"
    return "student"


def _same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def warm_start(model: Data2VecAQC, path: str) -> List[str]:
    """Fill ``model`` from the released model at ``path``; returns the lines that say what happened."""
    from aqc.api import load_model

    if not Path(path).exists():
        raise AQCUserError(f"--init_upstream {path}: no such file or folder")
    source = load_model(path)
    was_at = source.num_updates
    theirs = source.state_dict()
    ours = model.state_dict()
    student = [k for k in ours if _group(k) == "student" and not k.endswith(EXTRA_STATE_SUFFIX)]
    missing = [k for k in student if k not in theirs]
    differs = [k for k in ours if k in theirs and not k.endswith(EXTRA_STATE_SUFFIX)
               and theirs[k].shape != ours[k].shape]
    if missing or differs:
        key = (differs or missing)[0]
        detail = (f"{key} is {tuple(theirs[key].shape)} in the file, {tuple(ours[key].shape)} here" if differs
                  else f"{key} is not in the file")
        raise AQCUserError(
            f"--init_upstream {path}: the file's architecture ({_sizes(source)}) is not this run's model_conf "
            f"({_sizes(model)}); {detail}. Fix: a model_conf of the file's size (e.g. preset: base for a Base "
            "checkpoint)")
    state, fresh = dict(ours), []
    for key in ours:
        if key.endswith(EXTRA_STATE_SUFFIX):
            continue
        if key in theirs:
            state[key] = theirs[key].to(ours[key].dtype)
        else:
            fresh.append(key)
    model.load_state_dict(state)
    model.set_num_updates(0)

    teacher = {k[len("teacher.encoder."):]: v for k, v in theirs.items() if k.startswith("teacher.encoder.")}
    encoder = {k[len("encoder."):]: v for k, v in theirs.items() if k.startswith("encoder.")}
    teacher_from = ("a copy of the student (the file has no teacher)" if _same(teacher, encoder)
                    else "the file's EMA teacher")
    loaded = len([k for k in ours if k in theirs and not k.endswith(EXTRA_STATE_SUFFIX)])
    lines = [f"continued pre-training from {path}",
             f"  loaded: {loaded} tensors (CNN, transformer{', final_proj' if 'final_proj.weight' in theirs else ''}"
             f"{', quantizer' if any(_group(k) == 'quantizer' for k in theirs) and model.quantizer is not None else ''})",
             f"  teacher: {teacher_from}"]
    for group in ("quantizer", "final_proj"):
        keys = [k for k in fresh if _group(k) == group]
        if keys:
            lines.append(f"  initialised afresh: {group} ({len(keys)} tensors; the file has none)")
    others = [k for k in fresh if _group(k) not in ("quantizer", "final_proj")]
    if others:
        lines.append(f"  initialised afresh: {', '.join(others)}")
    lines.append(f"  reset: optimizer, scheduler, update counter (the file was at update {was_at}; this run starts at 0)")
    return lines
