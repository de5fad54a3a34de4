"""EMA teacher: an exponential moving average of the student's transformer encoder."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .encoder import TransformerEncoder


def ema_decay_at(num_updates: int, start: float = 0.999, end: float = 0.9999, anneal_end_step: int = 30000
                 ) -> float:
    """Decay tau(u): linear from ``start`` to ``end`` over ``anneal_end_step`` updates, then constant."""
    if num_updates >= anneal_end_step or anneal_end_step <= 0:
        return end
    return end - (end - start) * (1.0 - num_updates / anneal_end_step)


class EMATeacher(nn.Module):
    """Teacher copy of a :class:`TransformerEncoder`, kept in fp32 and frozen.

    :meth:`update` moves each transformer weight as ``t <- tau * t + (1 - tau) * s``; the positional conv
    is copied from the student instead (reference ``ema_layers_only``). It always runs in eval mode
    (no dropout, no layerdrop) and without gradients.
    """

    COPIED_PREFIX = "pos_conv."

    def __init__(self, student: TransformerEncoder):
        super().__init__()
        self.encoder = copy.deepcopy(student).float()
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True):  # the teacher never trains
        super().train(False)
        return self

    @torch.no_grad()
    def update(self, student: TransformerEncoder, decay: float) -> None:
        teacher_params = dict(self.encoder.named_parameters())
        averaged_t, averaged_s = [], []
        for name, s in student.named_parameters():
            t = teacher_params[name]
            if name.startswith(self.COPIED_PREFIX):
                t.copy_(s.detach())
            else:
                averaged_t.append(t)
                averaged_s.append(s.detach().to(t.dtype))
        if averaged_t:
            # t + (1 - tau) * (s - t) == tau * t + (1 - tau) * s: one pass over the weights, not two
            torch._foreach_lerp_(averaged_t, averaged_s, 1.0 - decay)
        teacher_buffers = dict(self.encoder.named_buffers())
        for name, b in student.named_buffers():
            teacher_buffers[name].copy_(b)

    @torch.no_grad()
    def forward(self, x, padding_mask=None):
        return self.encoder(x, padding_mask)
