"""data2vec's transformer encoder: a deep convolutional positional embedding and post-LN layers.

Every layer also returns its feed-forward output before dropout, residual and LayerNorm: the teacher's
regression targets are built from those (reference ``layer_result``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _zero_padding(x: Tensor, padding_mask: Optional[Tensor]) -> Tensor:
    """Zero the padded frames of (B, T, C) ``x``; ``padding_mask`` is True at padding."""
    if padding_mask is None:
        return x
    return x.masked_fill(padding_mask.unsqueeze(-1), 0.0)


class ConvPositionalBlock(nn.Module):
    """Grouped Conv1d over time (same length), non-affine LayerNorm over channels, GELU."""

    def __init__(self, embed_dim: int, kernel_size: int, groups: int):
        super().__init__()
        self.conv = nn.Conv1d(embed_dim, embed_dim, kernel_size, padding=kernel_size // 2, groups=groups)
        # An even kernel yields one extra frame ("SamePad" in the reference): drop it.
        self.remove = 1 if kernel_size % 2 == 0 else 0
        self.embed_dim = embed_dim

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, C, T)."""
        x = self.conv(x)
        if self.remove:
            x = x[:, :, : -self.remove]
        x = F.layer_norm(x.transpose(1, 2), (self.embed_dim,)).transpose(1, 2)
        return F.gelu(x)


class ConvPositionalEmbedding(nn.Module):
    """``depth`` stacked positional conv blocks whose output is added to the input (data2vec audio).

    With ``mask_padding`` the padded frames are zeroed before every block, so that a padded utterance
    gives exactly the features it gives alone (the reference zeroes them only before the first block).
    """

    def __init__(self, embed_dim: int, kernel_size: int, groups: int, depth: int, mask_padding: bool = True):
        super().__init__()
        self.layers = nn.ModuleList([ConvPositionalBlock(embed_dim, kernel_size, groups) for _ in range(depth)])
        self.mask_padding = mask_padding

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None) -> Tensor:
        """(B, T, C) -> (B, T, C) positional embedding (not yet added to the input)."""
        y = _zero_padding(x, padding_mask).transpose(1, 2)
        for i, layer in enumerate(self.layers):
            if i > 0 and self.mask_padding and padding_mask is not None:
                y = y.masked_fill(padding_mask.unsqueeze(1), 0.0)
            y = layer(y)
        return y.transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, T, C); attn_mask: (B, 1, 1, T) bool, True where a key may be attended."""
        batch, frames, _ = x.shape
        weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
        bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
        qkv = F.linear(x, weight, bias).view(batch, frames, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = out.transpose(1, 2).reshape(batch, frames, self.embed_dim)
        return self.out_proj(out)


class FeedForward(nn.Module):
    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))


class EncoderLayer(nn.Module):
    """Post-LN transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, embed_dim: int, ffn_dim: int, num_heads: int, dropout: float, attention_dropout: float,
                 activation_dropout: float):
        super().__init__()
        self.self_attn = SelfAttention(embed_dim, num_heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.feed_forward = FeedForward(embed_dim, ffn_dim, activation_dropout)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Optional[Tensor] = None):
        """Returns (output, feed-forward output before dropout/residual/LayerNorm)."""
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, attn_mask)))
        ffn_out = self.feed_forward(x)
        x = self.final_layer_norm(x + self.dropout(ffn_out))
        return x, ffn_out


@dataclass
class EncoderOutput:
    output: Tensor  # (B, T, C) last layer's output
    hidden_states: List[Tensor]  # the encoder input (after positional conv + LN), then each layer's output
    ffn_outputs: List[Tensor]  # each layer's feed-forward output (None for a layer skipped by layerdrop)


class TransformerEncoder(nn.Module):
    """Positional conv (residual), LayerNorm, dropout, then ``num_layers`` post-LN layers with layerdrop."""

    def __init__(self, embed_dim: int, ffn_dim: int, num_layers: int, num_heads: int, dropout: float,
                 attention_dropout: float, activation_dropout: float, layerdrop: float, pos_conv_kernel: int,
                 pos_conv_groups: int, pos_conv_depth: int, pos_conv_mask_padding: bool = True):
        super().__init__()
        self.pos_conv = ConvPositionalEmbedding(embed_dim, pos_conv_kernel, pos_conv_groups, pos_conv_depth,
                                                pos_conv_mask_padding)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.layerdrop = layerdrop
        self.layers = nn.ModuleList([
            EncoderLayer(embed_dim, ffn_dim, num_heads, dropout, attention_dropout, activation_dropout)
            for _ in range(num_layers)
        ])
        self.apply(_init_bert_params)

    def forward(self, x: Tensor, padding_mask: Optional[Tensor] = None, output_layers: Optional[int] = None
                ) -> EncoderOutput:
        """x: (B, T, C); padding_mask: (B, T) True at padded frames.

        ``output_layers`` stops after that many layers (feature extraction from a lower layer).
        """
        x = _zero_padding(x, padding_mask)
        x = self.layer_norm(x + self.pos_conv(x, padding_mask))
        x = self.dropout(x)
        attn_mask = None if padding_mask is None else (~padding_mask)[:, None, None, :]
        hidden_states, ffn_outputs = [x], []
        for i, layer in enumerate(self.layers):
            if output_layers is not None and i >= output_layers:
                break
            if self.training and self.layerdrop > 0 and torch.rand(()).item() < self.layerdrop:
                hidden_states.append(x)
                ffn_outputs.append(None)
                continue
            x, ffn_out = layer(x, attn_mask)
            hidden_states.append(x)
            ffn_outputs.append(ffn_out)
        return EncoderOutput(x, hidden_states, ffn_outputs)


def _init_bert_params(module: nn.Module) -> None:
    """BERT-style init of the transformer (reference ``init_bert_params``): N(0, 0.02) weights, zero bias."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
