"""Gumbel-softmax vector quantizer (wav2vec 2.0's, reference ``GumbelVectorQuantizer``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gumbel_temperature_at(num_updates: int, latent_temp: Tuple[float, float, float] = (2.0, 0.5, 0.999995)
                          ) -> float:
    """max(start * decay ** u, end)."""
    start, end, decay = latent_temp
    return max(start * decay ** num_updates, end)


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (N, codebook_dim), after project_q
    codes: Tensor  # (N, groups) chosen entry per group
    prob_perplexity: Tensor  # exp(entropy) of the batch-averaged soft-max, summed over groups
    code_perplexity: Tensor  # the same for the hard code choices
    diversity: Tensor  # (G*V - prob_perplexity) / (G*V)


class GumbelVectorQuantizer(nn.Module):
    """``groups`` codebooks of ``num_vars`` entries each; the chosen entries are concatenated.

    Training: Gumbel soft-max with hard (straight-through) one-hot choices at the current temperature.
    Eval: argmax. The concatenated entries go through ``project_q`` (reference: project_q on the
    quantizer output).
    """

    def __init__(self, input_dim: int, num_vars: int = 320, groups: int = 2, codebook_dim: int = 256,
                 latent_temp: Tuple[float, float, float] = (2.0, 0.5, 0.999995)):
        super().__init__()
        self.num_vars = num_vars
        self.groups = groups
        self.latent_temp = latent_temp
        self.temperature = latent_temp[0]
        self.codevectors = nn.Parameter(torch.empty(1, groups * num_vars, codebook_dim // groups).uniform_())
        self.weight_proj = nn.Linear(input_dim, groups * num_vars)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)
        self.project_q = nn.Linear(codebook_dim, codebook_dim)

    def set_num_updates(self, num_updates: int) -> None:
        self.temperature = gumbel_temperature_at(num_updates, self.latent_temp)

    def forward(self, x: Tensor, perplexity_rows: Optional[Tensor] = None) -> QuantizerOutput:
        """x: (N, input_dim). ``perplexity_rows`` (bool, (N,)) picks the rows the perplexities and the
        diversity loss are computed on (the reference uses the clean view only)."""
        n = x.shape[0]
        logits = self.weight_proj(x).float().view(n * self.groups, self.num_vars)
        codes = logits.argmax(dim=-1)
        hard = F.one_hot(codes, self.num_vars).to(logits.dtype)

        probs = torch.softmax(logits.view(n, self.groups, self.num_vars), dim=-1)
        if perplexity_rows is None:
            avg_hard = hard.view(n, self.groups, self.num_vars).mean(dim=0)
            avg_probs = probs.mean(dim=0)
        else:  # the mean over the picked rows, as a weighted sum: no boolean indexing (a host sync on GPU)
            weight = perplexity_rows.to(logits.dtype).view(n, 1, 1)
            count = weight.sum()
            avg_hard = (hard.view(n, self.groups, self.num_vars) * weight).sum(dim=0) / count
            avg_probs = (probs * weight).sum(dim=0) / count
        code_ppl = torch.exp(-(avg_hard * torch.log(avg_hard + 1e-7)).sum(dim=-1)).sum()
        prob_ppl = torch.exp(-(avg_probs * torch.log(avg_probs + 1e-7)).sum(dim=-1)).sum()
        total_vars = self.groups * self.num_vars
        diversity = (total_vars - prob_ppl) / total_vars

        if self.training:
            onehot = F.gumbel_softmax(logits, tau=self.temperature, hard=True)
            codes = onehot.argmax(dim=-1)
        else:
            onehot = hard
        onehot = onehot.view(n, self.groups, self.num_vars)
        # Each group picks from its own codebook block: (N, G, V) x (G, V, d) -> (N, G, d).
        codebook = self.codevectors.view(self.groups, self.num_vars, -1).to(onehot.dtype)
        quantized = torch.einsum("ngv,gvd->ngd", onehot, codebook).reshape(n, -1)
        quantized = self.project_q(quantized.to(self.project_q.weight.dtype))
        return QuantizerOutput(quantized, codes.view(n, self.groups), prob_ppl, code_ppl, diversity)
