"""Span masking on the CNN-frame grid (reference ``compute_mask_indices`` with ``require_same_masks``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def compute_span_mask(
    frame_lengths: Tensor,
    num_frames: int,
    mask_prob: float = 0.65,
    mask_length: int = 10,
    min_masks: int = 1,
    min_masked_frames: int = 2,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Boolean (B, T) mask with the same number of masked frames in every row, never on padding.

    Per row of ``n`` valid frames: ``floor(mask_prob * n / mask_length + U[0, 1))`` span starts (at least
    ``min_masks``; without padding, one such count is drawn for the whole batch, as the reference's
    ``compute_mask_indices`` does) are drawn without replacement from ``[0, n - mask_length)``; each span covers
    ``mask_length`` frames and overlaps merge. Then masked frames are dropped at random until every row
    holds the batch's smallest count (expected coverage about 49 % for the defaults).
    ``min_masked_frames`` (2: a frame needs another masked frame as its negative) is kept where the
    utterance has that many frames.
    """
    lengths = [int(n) for n in frame_lengths.tolist()]
    batch = len(lengths)
    batch_spans = None
    if all(n == num_frames for n in lengths):  # no padding: one span count for every row (reference)
        batch_spans = int(mask_prob * num_frames / mask_length + torch.rand((), generator=generator).item())
    rows = []
    for n in lengths:
        if n <= 0:
            raise ValueError("compute_span_mask: an utterance has no frames; filter it out before masking")
        span = min(mask_length, n)
        num_spans = (batch_spans if batch_spans is not None
                     else int(mask_prob * n / mask_length + torch.rand((), generator=generator).item()))
        num_spans = max(min_masks, num_spans)
        num_starts = n - span + 1 if span == n else n - span
        num_spans = min(num_spans, num_starts)
        starts = torch.randperm(num_starts, generator=generator)[:num_spans]
        idx = (starts[:, None] + torch.arange(span)[None, :]).flatten().unique()
        if idx.numel() < min(min_masked_frames, n):
            extra = torch.randperm(n, generator=generator)
            idx = torch.cat([idx, extra[~torch.isin(extra, idx)][: min(min_masked_frames, n) - idx.numel()]])
        rows.append(idx)
    target = min(r.numel() for r in rows)
    mask = torch.zeros(batch, num_frames, dtype=torch.bool)
    for b, idx in enumerate(rows):
        if idx.numel() > target:
            idx = idx[torch.randperm(idx.numel(), generator=generator)[:target]]
        mask[b, idx] = True
    return mask
