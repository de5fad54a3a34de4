"""Distractor sampling for the contrastive terms (reference ``sample_negatives``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def sample_negative_indices(batch: int, num_masked: int, num_negatives: int,
                            device: Optional[torch.device] = None,
                            generator: Optional[torch.Generator] = None) -> Tensor:
    """(B, M, N) indices into the M masked frames of the same utterance.

    Each frame gets ``num_negatives`` draws, uniform with replacement, from the utterance's *other*
    M - 1 masked frames (never itself; padding is never masked, so never drawn). Needs M >= 2.
    """
    if num_masked < 2:
        raise ValueError(f"sample_negative_indices: need at least 2 masked frames per utterance, got {num_masked}")
    idx = torch.randint(0, num_masked - 1, (batch, num_masked, num_negatives), generator=generator)
    own = torch.arange(num_masked).view(1, num_masked, 1)
    idx = idx + (idx >= own).long()  # skip the frame itself
    return idx.to(device) if device is not None else idx
