"""ESPnet's checkpoint reading and writing, under aqc's rules (:mod:`aqc.checkpoints`).

ESPnet loads every checkpoint with ``torch.load(..., weights_only=False)``: its trainer's ``--resume``,
``--init_param`` (``load_pretrained_model``), the n-best averaging, and ``build_model_from_file``, which
decoding's ``--asr_model_file`` goes through. :func:`install` (run when aqc's ESPnet plug-ins are
imported) gives those modules a ``torch`` whose ``load`` is :func:`aqc.checkpoints.load_checkpoint`
(``weights_only=True`` whatever the caller asks; a file that names code is refused and nothing of it
runs) and whose ``save`` is :func:`aqc.checkpoints.atomic_save`; every other attribute is torch's own.
``--init_param`` also reports an unreadable or mismatching file in one line (:func:`guarded_init_param`).

``--resume`` with a ``model_conf`` other than the one in the run's ``config.yaml`` stops before ESPnet
overwrites that file (:func:`check_resume_config`).
"""
from __future__ import annotations

import importlib
import types
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from aqc.checkpoints import CheckpointError, atomic_save, checkpoint_errors, load_checkpoint

# The ESPnet modules that load or save checkpoints on the paths aqc's entry points use.
ESPNET_CHECKPOINT_MODULES = ("espnet2.train.trainer", "espnet2.torch_utils.load_pretrained_model",
                             "espnet2.tasks.abs_task", "espnet2.main_funcs.average_nbest_models")


class _TorchWithSafeCheckpoints(types.ModuleType):
    """Stands in for ``torch`` in an ESPnet module: every attribute is torch's but ``load`` and ``save``."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
        return load_checkpoint(f, map_location=map_location)  # weights_only=False requests are not honoured

    @staticmethod
    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        atomic_save(obj, f, *args, **kwargs)


def guarded_init_param(original):
    """ESPnet's ``load_pretrained_model`` that names a missing, unreadable or mismatching file in one line."""
    if getattr(original, "_aqc_guarded", False):
        return original

    def load_pretrained_model(init_param: str, *args: Any, **kwargs: Any):
        path = Path(init_param.split(":", 1)[0])
        if not path.is_file():
            raise CheckpointError(f"--init_param {init_param}: {path} does not exist")
        with checkpoint_errors(path):
            return original(init_param, *args, **kwargs)

    load_pretrained_model._aqc_guarded = True  # type: ignore[attr-defined]
    load_pretrained_model.__doc__ = original.__doc__
    return load_pretrained_model


def install() -> None:
    """Route ESPnet's checkpoint loading and saving through aqc's rules (idempotent)."""
    for name in ESPNET_CHECKPOINT_MODULES:
        module = importlib.import_module(name)
        if not isinstance(getattr(module, "torch", None), _TorchWithSafeCheckpoints):
            module.torch = _TorchWithSafeCheckpoints()
    abs_task = importlib.import_module("espnet2.tasks.abs_task")
    abs_task.load_pretrained_model = guarded_init_param(abs_task.load_pretrained_model)


def check_resume_config(output_dir: Path, model_conf: Optional[Dict[str, Any]]) -> None:
    """``--resume`` with a ``model_conf`` other than the run's: stop before ESPnet overwrites config.yaml."""
    import yaml

    from aqc.models.io import config_from_model_conf

    path = Path(output_dir) / "config.yaml"
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        saved = (yaml.safe_load(f) or {}).get("model_conf") or {}
    try:
        old = config_from_model_conf(saved).to_dict()
    except ValueError:
        return
    new = config_from_model_conf(model_conf or {}).to_dict()
    changed = sorted(k for k in new if new[k] != old.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed[:8])
        raise CheckpointError(
            f"--resume true in {output_dir}, but model_conf differs from the run's {path} ({diffs}). Fix: resume "
            f"with the configuration of that run (e.g. --config {path}), or use a new --output_dir")
