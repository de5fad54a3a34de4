"""Losses: teacher-target regression and the cross-contrastive InfoNCE with cluster-aware negatives."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def regression_loss(prediction: Tensor, target: Tensor, loss_beta: float = 0.0,
                    loss_scale: Optional[float] = None) -> Tensor:
    """Sum over frames of the per-frame loss summed over dims, times ``loss_scale`` (1/sqrt(D) if None).

    ``loss_beta == 0``: squared error (reference default). ``> 0``: Smooth L1 with that beta (broken in
    the reference; works here).
    """
    prediction = prediction.float()
    target = target.float()
    if loss_beta == 0:
        per_elem = F.mse_loss(prediction, target, reduction="none")
    else:
        per_elem = F.smooth_l1_loss(prediction, target, reduction="none", beta=loss_beta)
    scale = loss_scale if loss_scale is not None else 1.0 / math.sqrt(prediction.shape[-1])
    return per_elem.sum() * scale


def contrastive_logits(anchors: Tensor, codes: Tensor, negative_idx: Tensor, code_ids: Tensor,
                       cluster_ids: Optional[Tensor] = None, logit_temp: float = 0.1,
                       scale_factor: float = 0.3, cluster_scaling: str = "multiply_logit") -> Tensor:
    """(B, M, 1 + N) fp32 logits: cosine(anchor, [positive, negatives]) / ``logit_temp``.

    anchors, codes: (B, M, D); the positive of anchor m is codes[:, m], its negatives
    codes[:, negative_idx[:, m]]. code_ids (B, M) identify the quantized code (equal ids = equal
    vectors): a negative equal to its positive gets -inf. cluster_ids (B, M): a negative in its
    positive's k-means cluster is down-weighted by ``scale_factor``: ``multiply_logit`` multiplies its
    logit (reference), ``log_weight`` adds log(scale_factor) (scales its exp term). Both adjustments
    always apply (the reference applied them only when some duplicate existed in the batch).
    """
    a = F.normalize(anchors.float(), dim=-1)
    c = F.normalize(codes.float(), dim=-1)
    # All pairs within an utterance as one batched matmul, then pick positives and negatives.
    sims = torch.bmm(a, c.transpose(1, 2)) / logit_temp  # (B, M, M)
    pos = sims.diagonal(dim1=1, dim2=2).unsqueeze(-1)
    neg = sims.gather(2, negative_idx)
    neg_code = code_ids.gather(1, negative_idx.flatten(1)).view_as(negative_idx)
    duplicate = neg_code == code_ids.unsqueeze(-1)
    if cluster_ids is not None:
        neg_cluster = cluster_ids.gather(1, negative_idx.flatten(1)).view_as(negative_idx)
        same_cluster = neg_cluster == cluster_ids.unsqueeze(-1)
        if cluster_scaling == "multiply_logit":
            neg = torch.where(same_cluster, neg * scale_factor, neg)
        elif cluster_scaling == "log_weight":
            neg = torch.where(same_cluster, neg + math.log(scale_factor), neg)
        else:
            raise ValueError(f"unknown cluster_scaling {cluster_scaling!r}")
    neg = neg.masked_fill(duplicate, float("-inf"))
    return torch.cat([pos, neg], dim=-1)


def contrastive_loss(logits: Tensor) -> Tensor:
    """Summed cross-entropy with the positive at index 0, fp32."""
    logits = logits.float().flatten(0, -2)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target, reduction="sum")
