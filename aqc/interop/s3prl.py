"""Export for s3prl's ``data2vec`` upstream (and so ESPnet's ``frontend: s3prl``).

s3prl (0.4.x, ``s3prl/upstream/data2vec/convert.py::load_converted_model``) reads
``torch.load(ckpt)`` (weights_only by default on torch >= 2.6, so plain containers and tensors only)
and requires three keys:

* ``task_cfg``: fairseq ``AudioPretrainingConfig`` fields; ``normalize`` decides whether the upstream
  normalises each waveform (True: aqc pre-trains on normalised audio).
* ``model_cfg``: fairseq ``Data2VecAudioConfig`` fields (unknown fields are dropped by s3prl's
  ``merge_with_parent``).
* ``model_weight``: the state dict under fairseq names. s3prl deletes ``model_weight["_ema"]``
  unconditionally, removes the pre-training modules (``final_proj``) and then loads *strictly*, so the
  weights are exactly the inference encoder plus ``_ema`` (here: aqc's EMA teacher).

A top-level ``aqc`` entry (ignored by s3prl) keeps the exact aqc config and update count so that
``python -m aqc.bin.import_fairseq`` restores the same options. ESPnet use::

    frontend: s3prl
    frontend_conf:
        frontend_conf:
            upstream: data2vec_local
            path_or_url: /path/to/s3prl_data2vec.pt
        download_dir: ./hub
        multilayer_feature: true

s3prl pads a batch and zeroes padded frames only before the first positional conv block, i.e. it
behaves like aqc with ``pos_conv_mask_padding=False`` (identical features for unpadded input).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

import torch

from aqc.models import Data2VecAQC

from .checkpoint import PathLike
from .fairseq import config_to_fairseq, fairseq_state_dict

REQUIRED_KEYS = ("task_cfg", "model_cfg", "model_weight")
SAMPLE_RATE = 16000


def s3prl_checkpoint(model: Data2VecAQC) -> Dict[str, Any]:
    """The checkpoint dict (see the module doc)."""
    return {
        "task_cfg": {"_name": "audio_pretraining", "sample_rate": SAMPLE_RATE, "normalize": True,
                     "enable_padding": False, "max_sample_size": None, "min_sample_size": None},
        "model_cfg": config_to_fairseq(model.config),
        "model_weight": fairseq_state_dict(model, inference_only=True),
        "aqc": {"config": model.config.to_dict(), "num_updates": int(model.num_updates)},
    }


def export_s3prl(model: Data2VecAQC, path: PathLike) -> Path:
    """Write the s3prl checkpoint to ``path`` (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(s3prl_checkpoint(model), tmp)
    os.replace(tmp, path)
    return path
