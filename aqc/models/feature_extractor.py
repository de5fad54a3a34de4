"""CNN feature encoder (raw waveform -> 512-d frames every 20 ms), feature LayerNorm and projection."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _GradMultiply(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class ConvLayerBlock(nn.Module):
    """Conv1d, then an optional norm over channels (LayerNorm) or time (GroupNorm), then GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, bias: bool,
                 norm: Optional[str]):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)
        if norm == "layer_norm":
            self.layer_norm = nn.LayerNorm(out_channels)
        elif norm == "group_norm":
            self.layer_norm = nn.GroupNorm(out_channels, out_channels)
        else:
            self.layer_norm = None
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, T) -> (B, C_out, T'), through :meth:`forward_time_major`."""
        return self.forward_time_major(x.transpose(1, 2)).transpose(1, 2)

    def forward_time_major(self, x: Tensor) -> Tensor:
        """(B, T, C_in) -> (B, T', C_out): the same function as ``conv`` + norm + GELU, computed time-major.

        The convolution is one matrix product over the windows ``x.unfold`` cuts (k == stride: a free
        view; k > stride: one im2col copy) with the conv weight reordered to (k * C_in, C_out). Time-major
        data lets the channel LayerNorm and GELU run on contiguous rows without the two transposed copies
        per layer of the (B, C, T) layout; on CPU the CNN's forward + backward runs about 1.7x faster
        than through ``nn.Conv1d`` (bench/README.md). ``self.conv`` keeps its parameters and state-dict
        keys.
        """
        conv = self.conv
        windows = x.unfold(1, self.kernel_size, self.stride).transpose(-1, -2)  # (B, T', k, C_in)
        # (k * C_in, C_out), row-major, on the right of the product: autograd then forms the weight
        # gradient as windows^T @ grad, which MKL runs about 6x faster than grad^T @ windows (what
        # F.linear, or a column-major weight, gets) for the first layer (k * C_in = 10), and as fast
        # for the others.
        weight = conv.weight.permute(2, 1, 0).reshape(-1, conv.out_channels).contiguous()
        batch, frames = windows.shape[:2]
        x = windows.reshape(batch * frames, -1).mm(weight).view(batch, frames, -1)  # (B * T', k * C_in) @ W
        if conv.bias is not None:
            x = x + conv.bias.to(x.dtype)
        if self.norm == "layer_norm":
            x = F.layer_norm(x.float(), self.layer_norm.normalized_shape, self.layer_norm.weight.float(),
                             self.layer_norm.bias.float(), self.layer_norm.eps).type_as(x)
        elif self.norm == "group_norm":  # over time, per channel
            x = self.layer_norm(x.transpose(1, 2).float()).transpose(1, 2).type_as(x)
        return F.gelu(x)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        return torch.div(lengths - self.kernel_size, self.stride, rounding_mode="floor") + 1


class FeatureExtractor(nn.Module):
    """The wav2vec 2.0 / data2vec CNN: (B, L) samples -> (B, C, T) frames.

    ``extractor_mode="layer_norm"`` normalises every layer over channels (data2vec, reference);
    ``"group_norm"`` normalises only the first layer, over time (wav2vec 2.0 Base).
    """

    def __init__(self, conv_layers: Sequence[Tuple[int, int, int]], extractor_mode: str = "layer_norm",
                 conv_bias: bool = False):
        super().__init__()
        blocks: List[ConvLayerBlock] = []
        in_channels = 1
        for i, (channels, kernel, stride) in enumerate(conv_layers):
            if extractor_mode == "layer_norm":
                norm = "layer_norm"
            else:
                norm = "group_norm" if i == 0 else None
            blocks.append(ConvLayerBlock(in_channels, channels, kernel, stride, conv_bias, norm))
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)
        self.output_dim = in_channels

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame (400 for the Base CNN)."""
        field, jump = 1, 1
        for block in self.conv_layers:
            field += (block.kernel_size - 1) * jump
            jump *= block.stride
        return field

    @property
    def stride(self) -> int:
        """Samples between two frames (320 for the Base CNN)."""
        jump = 1
        for block in self.conv_layers:
            jump *= block.stride
        return jump

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frame count of each waveform length; lengths shorter than the receptive field give 0."""
        for block in self.conv_layers:
            lengths = block.output_lengths(lengths)
        return lengths.clamp(min=0)

    def forward(self, waveforms: Tensor, grad_mult: float = 1.0) -> Tensor:
        if waveforms.dim() != 2:
            raise ValueError(f"FeatureExtractor expects (batch, samples), got shape {tuple(waveforms.shape)}")
        x = waveforms.unsqueeze(-1)  # (B, L, 1): the blocks run time-major
        for block in self.conv_layers:
            x = block.forward_time_major(x)
        if grad_mult != 1.0 and x.requires_grad:
            x = _GradMultiply.apply(x, grad_mult)
        return x.transpose(1, 2)  # (B, C, T), a view of the time-major result


class FeatureProjection(nn.Module):
    """LayerNorm over the CNN channels, a linear map to the transformer width, then ``dropout_input``.

    The LayerNorm output is also the quantizer's input, so ``forward`` returns both. Pre-training's
    teacher reads the projection *before* the dropout (the reference clones ``pre_encoder_features``
    ahead of ``dropout_input``): :meth:`project` returns that, and the model applies ``dropout`` to the
    student's view itself.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0):
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_features)
        self.projection = nn.Linear(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def project(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """(B, T, C) CNN frames -> (normalised (B, T, C), projected (B, T, D) without the dropout)."""
        normed = self.layer_norm(features)
        return normed, self.projection(normed)

    def forward(self, features: Tensor) -> Tuple[Tensor, Tensor]:
        """(B, T, C) CNN frames -> (normalised (B, T, C), projected (B, T, D) after the dropout)."""
        normed, projected = self.project(features)
        return normed, self.dropout(projected)
