"""Reading and writing aqc model files.

An *aqc model file* is a ``torch.save`` of ``{"format": "aqc-model", "version": 1, "config": {...},
"state_dict": {...}}`` holding a :class:`Data2VecAQC` (teacher included). :func:`load_model_file` also
reads the checkpoints ESPnet writes for aqc's SSL task (``exp/<dir>/*.pth``, a state dict whose
keys start with ``aqc.``, next to that experiment's ``config.yaml`` with ``model_conf``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch

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
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": 1, "config": model.config.to_dict(),
                "state_dict": model.state_dict()}, tmp)
    os.replace(tmp, path)


def _read_espnet_config(checkpoint: Path) -> Optional[Dict[str, Any]]:
    import yaml

    for candidate in (checkpoint.parent / "config.yaml", checkpoint.parent.parent / "config.yaml"):
        if candidate.is_file():
            with open(candidate, encoding="utf-8") as f:
                return yaml.safe_load(f)
    return None


def load_model_file(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Data2VecAQC:
    """Load an aqc model file or an ESPnet aqc SSL checkpoint (with its ``config.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aqc model file not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read {path} as a torch checkpoint: {exc}") from exc
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        config = Data2VecAQCConfig.from_dict(obj["config"])
        state_dict = obj["state_dict"]
    elif isinstance(obj, dict) and any(k.startswith(ESPNET_PREFIX) for k in obj):
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
