"""Regression targets: the average of the teacher's top-K feed-forward outputs, each instance-normalised."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor


def masked_instance_norm(x: Tensor, padding_mask: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Normalise (B, T, C) over time per (utterance, channel), using only unpadded frames; fp32.

    Matches ``F.instance_norm`` (biased variance, no affine) when there is no padding.
    """
    x = x.float()
    if padding_mask is None:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
    else:
        valid = (~padding_mask).unsqueeze(-1).to(x.dtype)
        count = valid.sum(dim=1, keepdim=True).clamp(min=1.0)
        mean = (x * valid).sum(dim=1, keepdim=True) / count
        var = (((x - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + eps)


def build_targets(ffn_outputs: List[Tensor], top_k: int, padding_mask: Optional[Tensor] = None,
                  eps: float = 1e-5) -> Tensor:
    """Mean of the last ``top_k`` layers' instance-normalised FFN outputs, (B, T, C) in fp32."""
    layers = ffn_outputs[-top_k:]
    if any(layer is None for layer in layers):
        raise ValueError("build_targets: a target layer was skipped (layerdrop must be off in the teacher)")
    total = masked_instance_norm(layers[0], padding_mask, eps)
    for layer in layers[1:]:
        total = total + masked_instance_norm(layer, padding_mask, eps)
    return total / len(layers)
