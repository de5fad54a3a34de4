"""Configuration of the data2vec-aqc model.

Each field names the reference option it mirrors (fairseq ``Data2VecAudioConfig`` /
``Wav2Vec2Config`` in the Speech-Lab-IITM/data2vec-aqc fork). Defaults are the paper's Base model;
``data2vec_aqc_tiny()`` shrinks the sizes but keeps every code path.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Tuple


@dataclass
class Data2VecAQCConfig:
    """Options of :class:`aqc.models.Data2VecAQC` (reference option in brackets).

    Feature encoder
        conv_layers: (channels, kernel, stride) per conv layer [conv_feature_layers].
        extractor_mode: ``layer_norm`` or ``group_norm`` [extractor_mode].
        conv_bias: bias in the conv layers [conv_bias].
        feature_grad_mult: gradient scale into the CNN [feature_grad_mult].
    Transformer encoder
        embed_dim [encoder_embed_dim], ffn_dim [encoder_ffn_embed_dim], num_layers [encoder_layers],
        num_heads [encoder_attention_heads], dropout [dropout], attention_dropout [attention_dropout],
        activation_dropout [activation_dropout], encoder_dropout_input [dropout_input],
        layerdrop [encoder_layerdrop], pos_conv_kernel [conv_pos // pos_conv_depth],
        pos_conv_groups [conv_pos_groups], pos_conv_depth [pos_conv_depth].
        pos_conv_mask_padding: zero padded frames before every positional conv block, so a padded
        utterance gives exactly its unpadded features (the reference and Hugging Face zero them only
        before the first block; False reproduces that).
    Masking
        mask_prob [mask_prob], mask_length [mask_length], min_masks [mask_min_space/min_masks].
    Teacher
        ema_decay [ema_decay], ema_end_decay [ema_end_decay], ema_anneal_end_step [ema_anneal_end_step],
        top_k_layers [average_top_k_layers], instance_norm_eps (F.instance_norm's eps).
        teacher_view: ``clean`` (reference code) or ``augmented`` (paper figure; the caller passes a
        second augmented view as ``teacher_input``).
    Regression
        loss_beta [loss_beta]: 0 = L2, > 0 = Smooth L1 with that beta. loss_scale [loss_scale]:
        None = 1/sqrt(embed_dim).
    Quantizer
        latent_vars [latent_vars], latent_groups [latent_groups],
        codebook_dim [final_dim / latent_dim], latent_temp [latent_temp] = (start, end, decay).
    Ablations (paper: data2vec, +A, +A+Q, +A+Q+C; A, augmentation, is the data pipeline's switch)
        use_quantizer (+Q): the quantizer and the two cross-contrastive terms.
        use_clustering (+C): k-means down-weighting of same-cluster negatives.
    Cross-contrastive loss
        num_negatives [num_negatives], logit_temp [logit_temp],
        cluster_factor [cluster_factor], scale_factor [scale_factor],
        cluster_scaling: ``multiply_logit`` (reference) or ``log_weight``,
        kmeans_backend: ``batched`` (in-house) or ``fast_pytorch_kmeans``, kmeans_iters (bound on Lloyd
        iterations; reference max_iter 100), kmeans_tol (reference tol 1e-4).
    Loss weights (hard-coded in the reference; configuration here)
        regression_weight 1.0, contrastive_student_weight 0.5, contrastive_teacher_weight 0.5,
        diversity_weight 0.1, feature_penalty_weight 10 [ModelCriterion loss_weights, scale_contrastive].
    Collapse guards
        min_target_std [min_target_var], min_pred_std [min_pred_var], collapse_check_after: the guards
        run once more than this many updates are done (reference: ``num_updates > 5000``); negative
        disables them.
    """

    # feature encoder
    conv_layers: List[Tuple[int, int, int]] = field(
        default_factory=lambda: [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    )
    extractor_mode: str = "layer_norm"
    conv_bias: bool = False
    feature_grad_mult: float = 1.0
    # transformer
    embed_dim: int = 768
    ffn_dim: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_dropout_input: float = 0.0
    layerdrop: float = 0.05
    pos_conv_kernel: int = 19
    pos_conv_groups: int = 16
    pos_conv_depth: int = 5
    pos_conv_mask_padding: bool = True
    # masking
    mask_prob: float = 0.65
    mask_length: int = 10
    min_masks: int = 1
    # teacher
    ema_decay: float = 0.999
    ema_end_decay: float = 0.9999
    ema_anneal_end_step: int = 30000
    top_k_layers: int = 8
    instance_norm_eps: float = 1e-5
    teacher_view: str = "clean"
    # regression
    loss_beta: float = 0.0
    loss_scale: float | None = None
    # quantizer
    use_quantizer: bool = True
    latent_vars: int = 320
    latent_groups: int = 2
    codebook_dim: int = 256
    latent_temp: Tuple[float, float, float] = (2.0, 0.5, 0.999995)
    # cross-contrastive
    num_negatives: int = 100
    logit_temp: float = 0.1
    use_clustering: bool = True
    cluster_factor: int = 16
    scale_factor: float = 0.3
    cluster_scaling: str = "multiply_logit"
    kmeans_backend: str = "batched"
    kmeans_iters: int = 30
    kmeans_tol: float = 1e-4
    # loss weights
    regression_weight: float = 1.0
    contrastive_student_weight: float = 0.5
    contrastive_teacher_weight: float = 0.5
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    # collapse guards
    min_target_std: float = 0.1
    min_pred_std: float = 0.01
    collapse_check_after: int = 5000

    def __post_init__(self):
        self.conv_layers = [tuple(int(v) for v in layer) for layer in self.conv_layers]
        self.latent_temp = tuple(float(v) for v in self.latent_temp)
        checks = [
            (self.extractor_mode in ("layer_norm", "group_norm"), "extractor_mode must be layer_norm or group_norm"),
            (self.embed_dim % self.num_heads == 0, "embed_dim must be divisible by num_heads"),
            (self.embed_dim % self.pos_conv_groups == 0, "embed_dim must be divisible by pos_conv_groups"),
            (1 <= self.top_k_layers <= self.num_layers, "top_k_layers must be in [1, num_layers]"),
            (self.teacher_view in ("clean", "augmented"), "teacher_view must be clean or augmented"),
            (self.codebook_dim % self.latent_groups == 0, "codebook_dim must be divisible by latent_groups"),
            (self.cluster_scaling in ("multiply_logit", "log_weight"),
             "cluster_scaling must be multiply_logit or log_weight"),
            (self.kmeans_backend in ("batched", "fast_pytorch_kmeans"),
             "kmeans_backend must be batched or fast_pytorch_kmeans"),
            (not self.use_clustering or self.use_quantizer, "use_clustering needs use_quantizer"),
            (0.0 < self.mask_prob < 1.0, "mask_prob must be in (0, 1)"),
            (self.num_negatives >= 1, "num_negatives must be >= 1"),
            (0.0 < self.scale_factor <= 1.0, "scale_factor must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Data2VecAQCConfig: {message}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["conv_layers"] = [list(layer) for layer in self.conv_layers]
        d["latent_temp"] = list(self.latent_temp)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Data2VecAQCConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"Data2VecAQCConfig: unknown option(s) {unknown}; valid options are: {sorted(known)}"
            )
        return cls(**d)
