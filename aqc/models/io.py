"""Reading and writing aqc model files.

An *aqc model file* is a ``torch.save`` of ``{"format": "aqc-model", "version": 1, "config": {...},
"state_dict": {...}}`` holding a :class:`Data2VecAQC` (teacher included). :func:`load_model_file` also
reads the checkpoints ESPnet writes for aqc's SSL task (``exp/<dir>/*.pth``, a state dict whose
keys start with ``aqc.``, and ``checkpoint.pth``, whose ``model`` entry is one, next to that
experiment's ``config.yaml`` with ``model_conf``). Files are read with ``weights_only=True``
(:func:`aqc.checkpoints.load_checkpoint`): one that names code is refused and nothing of it runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

from aqc.checkpoints import atomic_save, load_checkpoint

from .config import Data2VecAQCConfig
from .model import Data2VecAQC

FORMAT = "aqc-model"
ESPNET_PREFIX = "aqc."
PathLike = Union[str, os.PathLike]


def config_from_model_conf(model_conf: Mapping[str, Any]) -> Data2VecAQCConfig:
    """A config from a YAML ``model_conf``: optional ``preset: tiny|base`` plus field overrides."""
    from . import TINY_OVERRIDES

    conf = dict(model_conf or {})
    preset = conf.pop("preset", "base")
    if preset not in ("base", "tiny"):
        raise ValueError(f"model_conf: unknown preset {preset!r}; use base or tiny")
    base = dict(TINY_OVERRIDES) if preset == "tiny" else {}
    return Data2VecAQCConfig.from_dict({**base, **conf})


def save_model_file(model: Data2VecAQC, path: PathLike) -> None:
    """Write ``model`` as an aqc model file (atomically: a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"format": FORMAT, "version": 1, "config": model.config.to_dict(),
                 "state_dict": model.state_dict()}, path)


def _read_espnet_config(checkpoint: Path) -> Optional[Dict[str, Any]]:
    import yaml

    for candidate in (checkpoint.parent / "config.yaml", checkpoint.parent.parent / "config.yaml"):
        if candidate.is_file():
            with open(candidate, encoding="utf-8") as f:
                return yaml.safe_load(f)
    return None


def is_espnet_aqc_state(obj: Any) -> bool:
    return isinstance(obj, dict) and any(str(k).startswith(ESPNET_PREFIX) for k in obj)


def is_aqc_checkpoint(obj: Any) -> bool:
    """An aqc model file, an ESPnet aqc state dict, or ESPnet's ``checkpoint.pth`` holding one."""
    return isinstance(obj, dict) and (obj.get("format") == FORMAT or is_espnet_aqc_state(obj)
                                      or is_espnet_aqc_state(obj.get("model")))


def model_from_checkpoint(obj: Any, path: PathLike) -> Data2VecAQC:
    """The model in a loaded aqc checkpoint (``path``: where it came from, for ``config.yaml`` and errors)."""
    path = Path(path)
    if isinstance(obj, dict) and is_espnet_aqc_state(obj.get("model")):
        obj = obj["model"]  # ESPnet's checkpoint.pth: the model's state beside the optimizer's
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        config = Data2VecAQCConfig.from_dict(obj["config"])
        state_dict = obj["state_dict"]
    elif is_espnet_aqc_state(obj):
        espnet_config = _read_espnet_config(path)
        if espnet_config is None:
            raise ValueError(f"{path} is an ESPnet checkpoint but no config.yaml was found beside it "
                             f"({path.parent}/config.yaml); copy the experiment's config.yaml there")
        config = config_from_model_conf(espnet_config.get("model_conf") or {})
        state_dict = {k[len(ESPNET_PREFIX):]: v for k, v in obj.items() if k.startswith(ESPNET_PREFIX)}
    else:
        raise ValueError(f"{path} is neither an aqc model file nor an ESPnet aqc SSL checkpoint")
    model = Data2VecAQC(config)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the model its config describes "
                         f"(a checkpoint of a different architecture?): {exc}") from exc
    return model


def load_model_file(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Data2VecAQC:
    """Load an aqc model file or an ESPnet aqc SSL checkpoint (with its ``config.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aqc model file not found: {path}")
    return model_from_checkpoint(load_checkpoint(path, map_location=map_location), path)
