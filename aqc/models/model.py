"""The data2vec-aqc composite: wires the feature encoder, student, EMA teacher, quantizer and losses."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .clustering import cluster_labels, num_clusters_for
from .config import Data2VecAQCConfig
from .encoder import TransformerEncoder
from .feature_extractor import FeatureExtractor, FeatureProjection
from .losses import contrastive_logits, contrastive_loss, regression_loss
from .masking import compute_span_mask
from .negatives import sample_negative_indices
from .quantizer import GumbelVectorQuantizer
from .targets import build_targets
from .teacher import EMATeacher, ema_decay_at


class CollapseError(RuntimeError):
    """Raised when the teacher targets or the student predictions lose their variance."""


def _std_over_frames(x: Tensor) -> Tensor:
    """Reference ``compute_var``: per-dim std over frames, averaged over dims."""
    x = x.float().reshape(-1, x.shape[-1])
    return torch.sqrt(x.var(dim=0) + 1e-6).mean()


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def add_inference_encoder(module: nn.Module, c: Data2VecAQCConfig) -> None:
    """Give ``module`` the inference encoder: ``feature_extractor``, ``feature_projection``, ``mask_emb``
    and ``encoder`` (these names are the state-dict keys every aqc model file and export relies on)."""
    module.feature_extractor = FeatureExtractor(c.conv_layers, c.extractor_mode, c.conv_bias)
    module.feature_projection = FeatureProjection(module.feature_extractor.output_dim, c.embed_dim,
                                                  c.encoder_dropout_input)
    module.mask_emb = nn.Parameter(torch.empty(c.embed_dim).uniform_())
    module.encoder = TransformerEncoder(
        c.embed_dim, c.ffn_dim, c.num_layers, c.num_heads, c.dropout, c.attention_dropout,
        c.activation_dropout, c.layerdrop, c.pos_conv_kernel, c.pos_conv_groups, c.pos_conv_depth,
        c.pos_conv_mask_padding)


class Data2VecAQC(nn.Module):
    """data2vec-aqc pre-training model (Lodagala, Ghosh, Umesh, ICASSP 2023).

    ``forward(clean, augmented, lengths)`` computes one pre-training loss; call
    :meth:`update_teacher` once after every optimizer update. :meth:`extract_features` is the
    inference path (no masking, no teacher) used by downstream tasks and exporters.
    """

    def __init__(self, config: Data2VecAQCConfig):
        super().__init__()
        self.config = c = config
        add_inference_encoder(self, c)
        self.final_proj = nn.Linear(c.embed_dim, c.embed_dim)
        if c.use_quantizer:
            self.quantizer = GumbelVectorQuantizer(self.feature_extractor.output_dim, c.latent_vars,
                                                   c.latent_groups, c.codebook_dim, c.latent_temp)
            self.contr_proj = nn.Linear(c.embed_dim, c.codebook_dim)
        else:
            self.quantizer = None
            self.contr_proj = None
        self.teacher = EMATeacher(self.encoder)
        self.num_updates = 0

    # ----------------------------------------------------------------------------------------- state
    def get_extra_state(self):
        return {"num_updates": self.num_updates}

    def set_extra_state(self, state):
        self.set_num_updates(int(state["num_updates"]))

    def set_num_updates(self, num_updates: int) -> None:
        """Set the update count that drives the EMA decay and the Gumbel temperature schedules."""
        self.num_updates = int(num_updates)
        if self.quantizer is not None:
            self.quantizer.set_num_updates(self.num_updates)

    @property
    def ema_decay(self) -> float:
        c = self.config
        return ema_decay_at(self.num_updates, c.ema_decay, c.ema_end_decay, c.ema_anneal_end_step)

    @torch.no_grad()
    def update_teacher(self, num_updates: int) -> float:
        """Advance the schedules to ``num_updates`` and move the teacher towards the student once.

        Call exactly once per optimizer update (aqc's ESPnet task does this with an optimizer step
        hook). Returns the decay used.
        """
        self.set_num_updates(num_updates)
        decay = self.ema_decay
        self.teacher.update(self.encoder, decay)
        return decay

    def student_parameters(self):
        """Every trainable parameter (the teacher excluded)."""
        return (p for name, p in self.named_parameters() if not name.startswith("teacher."))

    # -------------------------------------------------------------------------------------- features
    def frame_lengths(self, lengths: Tensor) -> Tensor:
        return self.feature_extractor.output_lengths(lengths)

    @property
    def receptive_field(self) -> int:
        return self.feature_extractor.receptive_field

    def _cnn(self, waveforms: Tensor, lengths: Optional[Tensor]) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Waveforms (B, L) -> CNN output (B, C, T), frame lengths (B,), padding mask (B, T) or None."""
        feats = self.feature_extractor(waveforms, self.config.feature_grad_mult)
        frames = feats.shape[-1]
        if lengths is None:
            frame_lengths = torch.full((waveforms.shape[0],), frames, dtype=torch.long, device=feats.device)
            return feats, frame_lengths, None
        frame_lengths = self.frame_lengths(lengths.to(feats.device)).clamp(max=frames)
        padding_mask = torch.arange(frames, device=feats.device)[None, :] >= frame_lengths[:, None]
        return feats, frame_lengths, (padding_mask if bool(padding_mask.any()) else None)

    def extract_features(self, waveforms: Tensor, lengths: Optional[Tensor] = None,
                         num_layers: Optional[int] = None) -> Tuple[List[Tensor], Tensor]:
        """Hidden states of the student encoder without masking or teacher.

        Returns ``num_layers + 1`` tensors (B, T, D): the encoder input after the positional conv and
        LayerNorm (Hugging Face's ``hidden_states[0]``), then each layer's output; and the frame lengths.
        """
        feats, frame_lengths, padding_mask = self._cnn(waveforms, lengths)
        _, x = self.feature_projection(feats.transpose(1, 2))
        out = self.encoder(x, padding_mask, output_layers=num_layers)
        return out.hidden_states, frame_lengths

    # --------------------------------------------------------------------------------------- training
    def forward(self, clean: Tensor, augmented: Tensor, lengths: Optional[Tensor] = None,
                teacher_input: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """One pre-training loss.

        clean, augmented: (B, L) waveforms of the same utterances, same crop, each normalised.
        lengths: (B,) valid samples (None: no padding). teacher_input: the teacher's view when
        ``teacher_view="augmented"`` (a second, independent augmentation); default the clean view.
        Returns the loss per masked frame and a dict of named scalars.
        """
        c = self.config
        if clean.shape != augmented.shape:
            raise ValueError(f"clean {tuple(clean.shape)} and augmented {tuple(augmented.shape)} views differ")
        batch = clean.shape[0]

        # Frame counts and the mask are worked out on the host, from the lengths alone, before the CNN
        # runs: on a GPU nothing below waits for queued work (no device-to-host reads in the step).
        frames = int(self.frame_lengths(torch.tensor([clean.shape[1]]))[0])
        host_lengths = (torch.full((batch,), clean.shape[1], dtype=torch.long) if lengths is None
                        else lengths.detach().cpu().long())
        host_frame_lengths = self.frame_lengths(host_lengths).clamp(max=frames)
        if int(host_frame_lengths.min()) < 2:
            raise ValueError(
                f"an utterance is shorter than 2 CNN frames ({self.receptive_field + self.feature_extractor.stride}"
                " samples); filter short utterances before batching")
        mask = compute_span_mask(host_frame_lengths, frames, c.mask_prob, c.mask_length, c.min_masks)
        num_masked = int(mask[0].sum())
        # Masked frames as flat (b * T + t) indices, row-major: the order boolean indexing gives.
        masked_idx = mask.flatten().nonzero().squeeze(1)

        # Both views through the shared CNN as one batch.
        feats = self.feature_extractor(torch.cat([clean, augmented]), c.feature_grad_mult)
        device = feats.device
        mask, masked_idx = mask.to(device), masked_idx.to(device)
        padding_mask = None
        if bool((host_frame_lengths < frames).any()):
            padding_mask = torch.arange(frames)[None, :] >= host_frame_lengths[:, None]
            padding_mask = padding_mask.to(device)

        def at_masked(x: Tensor) -> Tensor:
            """(B, T, C) -> (B, M, C): the masked frames of each utterance (``x[mask]``, without a sync)."""
            return x.flatten(0, 1).index_select(0, masked_idx).view(batch, num_masked, x.shape[-1])

        clean_feats = feats[:batch].float()
        if padding_mask is None:
            feature_penalty = clean_feats.pow(2).mean()
        else:
            valid = (~padding_mask).unsqueeze(1).to(clean_feats.dtype)
            feature_penalty = (clean_feats.pow(2) * valid).sum() / (valid.sum() * clean_feats.shape[1])
        # The teacher reads the projection before dropout_input, the student after it (reference).
        normed, projected = self.feature_projection.project(feats.transpose(1, 2))
        clean_proj, aug_proj = projected[:batch], self.feature_projection.dropout(projected[batch:])

        student_in = torch.where(mask.unsqueeze(-1), self.mask_emb.to(aug_proj.dtype), aug_proj)
        student_out = self.encoder(student_in, padding_mask).output

        with torch.no_grad():
            if c.teacher_view == "augmented":
                if teacher_input is None:
                    raise ValueError("teacher_view=augmented needs teacher_input (a second augmented view)")
                t_feats, _, _ = self._cnn(teacher_input, lengths)
                _, teacher_in = self.feature_projection.project(t_feats.transpose(1, 2))
            else:
                teacher_in = clean_proj.detach()
            teacher_out = self.teacher(teacher_in, padding_mask)
            targets = build_targets(teacher_out.ffn_outputs, c.top_k_layers, padding_mask, c.instance_norm_eps)

        masked_student = at_masked(student_out)
        masked_targets = at_masked(targets)
        prediction = self.final_proj(masked_student)
        num_frames_total = batch * num_masked
        regression = regression_loss(prediction, masked_targets, c.loss_beta, c.loss_scale) / num_frames_total

        stats: Dict[str, Tensor] = {}
        zero = regression.new_zeros(())
        contrastive_s = contrastive_t = diversity = zero
        if self.quantizer is not None:
            q_in = torch.cat([at_masked(normed[:batch]), at_masked(normed[batch:])]).flatten(0, 1)
            rows = torch.arange(q_in.shape[0], device=q_in.device) < num_frames_total
            q = self.quantizer(q_in, perplexity_rows=rows)
            diversity = q.diversity
            quantized = q.quantized.view(2, batch, num_masked, -1)
            code_ids = (q.codes[:, 0] if q.codes.shape[1] == 1 else
                        (q.codes * (c.latent_vars ** torch.arange(q.codes.shape[1], device=q.codes.device))).sum(1))
            code_ids = code_ids.view(2, batch, num_masked)
            clusters = (None, None)
            if c.use_clustering:
                seed = (self.num_updates * 1_000_003 + _rank() * 7919) % (2 ** 63)
                labels = cluster_labels(quantized.flatten(0, 2), num_clusters_for(frames, c.cluster_factor),
                                        c.kmeans_backend, c.kmeans_iters, c.kmeans_tol, seed)
                clusters = labels.view(2, batch, num_masked).unbind(0)
            idx_clean = sample_negative_indices(batch, num_masked, c.num_negatives, device)
            idx_aug = sample_negative_indices(batch, num_masked, c.num_negatives, device)
            anchors_s = self.contr_proj(masked_student)
            anchors_t = self.contr_proj(masked_targets.to(masked_student.dtype))
            kw = dict(logit_temp=c.logit_temp, scale_factor=c.scale_factor, cluster_scaling=c.cluster_scaling)
            logits_s = contrastive_logits(anchors_s, quantized[0], idx_clean, code_ids[0], clusters[0], **kw)
            logits_t = contrastive_logits(anchors_t, quantized[1], idx_aug, code_ids[1], clusters[1], **kw)
            contrastive_s = contrastive_loss(logits_s) / num_frames_total
            contrastive_t = contrastive_loss(logits_t) / num_frames_total
            stats["code_perplexity"] = q.code_perplexity.detach()
            stats["prob_perplexity"] = q.prob_perplexity.detach()
            stats["gumbel_temperature"] = zero.new_tensor(self.quantizer.temperature)

        loss = (c.regression_weight * regression + c.contrastive_student_weight * contrastive_s
                + c.contrastive_teacher_weight * contrastive_t + c.diversity_weight * diversity
                + c.feature_penalty_weight * feature_penalty)

        target_std = _std_over_frames(masked_targets).detach()
        prediction_std = _std_over_frames(prediction).detach()
        if self.training:
            self._check_collapse(target_std, prediction_std)
        stats.update(
            loss=loss.detach(), regression=regression.detach(), contrastive_student=contrastive_s.detach(),
            contrastive_teacher=contrastive_t.detach(), diversity=diversity.detach(),
            feature_penalty=feature_penalty.detach(), ema_decay=zero.new_tensor(self.ema_decay),
            target_std=target_std, prediction_std=prediction_std,
            masked_frames=zero.new_tensor(float(num_frames_total)),
        )
        return loss, stats

    def _check_collapse(self, target_std: Tensor, prediction_std: Tensor) -> None:
        c = self.config
        if c.collapse_check_after < 0 or self.num_updates <= c.collapse_check_after:  # reference: > 5000
            return
        if float(target_std) < c.min_target_std:
            raise CollapseError(
                f"teacher targets collapsed at update {self.num_updates}: target std {float(target_std):.4f} < "
                f"min_target_std {c.min_target_std}. Likely causes: learning rate too high or warm-up too "
                "short, or a batch too small for the EMA schedule. Lower the learning rate, lengthen the "
                "warm-up or raise the batch size (accum_grad), then restart from an earlier checkpoint.")
        if float(prediction_std) < c.min_pred_std:
            raise CollapseError(
                f"student predictions collapsed at update {self.num_updates}: prediction std "
                f"{float(prediction_std):.4f} < min_pred_std {c.min_pred_std}. Likely causes: learning rate too "
                "high or a batch too small. Lower the learning rate or raise the batch size (accum_grad).")
