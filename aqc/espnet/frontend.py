"""The ``aqc`` frontend for ESPnet's ASR task: a pre-trained data2vec-aqc model as a fine-tuned encoder.

Importing this module registers it (``frontend: aqc``); ``python -m aqc.bin.asr_train`` and
``python -m aqc.bin.asr_inference`` import it for you. With ``encoder: null`` and ``ctc_weight: 1.0`` the
ASR model is the reference's ``wav2vec_ctc`` (fairseq ``Wav2VecEncoder`` + a linear CTC head)::

    frontend: aqc
    frontend_conf:
        model_file: exp/ssl_tiny/valid.loss.best.pth  # aqc model file or ESPnet aqc SSL checkpoint
        layer: -1                 # -1 last layer, k (0..num_layers) one layer, "weighted" learned sum
        freeze_encoder_steps: 10000
        mask_prob: 0.65
        mask_length: 10
        mask_channel_prob: 0.25
        mask_channel_length: 64
        layerdrop: 0.1

Behaviour (reference section 6.2, fairseq ``Wav2VecEncoder``):

* Input: raw 16 kHz waveforms (B, L) with lengths; each utterance is normalised to zero mean and unit
  variance over its valid samples (``F.layer_norm`` over the signal, as pre-training's ``normalize``).
* The CNN feature encoder is frozen by default (``feature_grad_mult: 0``, the reference's fine-tuning
  setting: it runs under ``no_grad`` and its parameters have ``requires_grad=False``). With
  ``feature_grad_mult > 0`` it trains too, once the encoder is unfrozen, its gradient scaled by that
  factor (fairseq ``feature_grad_mult``): for small upstreams whose CNN pre-training could not finish.
* For the first ``freeze_encoder_steps`` *optimizer updates* the rest of the upstream (feature projection,
  ``mask_emb``, transformer) runs under ``no_grad`` too (fairseq ``freeze_finetune_updates``), so only the
  CTC head and the layer weights train; then everything but the CNN trains. Updates are counted by a
  global ``torch.optim`` step post-hook that ignores optimizers not holding this frontend's parameters:
  with ``accum_grad`` it counts updates, not micro-batches, and updates that ESPnet skips (non-finite
  gradient, AMP overflow) are not counted. The count is the buffer ``num_updates``, saved in
  checkpoints, so a resumed run continues where it stopped. In multi-GPU (DDP) runs the frozen steps
  leave parameters without gradients: set ``unused_parameters: true`` when ``freeze_encoder_steps > 0``.
* Training only: span masking of time frames with ``mask_emb`` (``mask_prob``/``mask_length``, same
  masked count per row, as pre-training) and channel masking (``mask_channel_prob``/
  ``mask_channel_length``: the same channel spans zeroed over all frames of an utterance), then the
  transformer with ``layerdrop``. The dropouts are overridden as fairseq fine-tuning does (defaults:
  dropout 0, attention 0, activation 0.1; ``None`` keeps the pre-trained value).

Self-contained models: after ESPnet builds the ASR model, this module writes the upstream's
configuration into ``args.frontend_conf["upstream_conf"]`` (a wrapper around ``ASRTask.build_model``,
installed by :func:`register`), and ESPnet dumps ``args`` as the experiment's ``config.yaml``. The
weights are ASR parameters (``frontend.upstream.*``) in every ``*.pth``. So an experiment directory
decodes on its own: when ``upstream_conf`` is given the frontend builds the architecture from it and
reads ``model_file`` only if that file still exists and holds the same architecture (its weights are
then replaced by the ASR checkpoint's anyway).
"""
from __future__ import annotations

import contextlib
import logging
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from espnet2.asr.frontend.abs_frontend import AbsFrontend

from aqc.augment.transforms import NORMALIZE_EPS
from aqc.models.config import Data2VecAQCConfig
from aqc.models.io import load_model_file
from aqc.models.model import add_inference_encoder
from aqc.models.masking import compute_span_mask

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class AQCUpstream(nn.Module):
    """The parts of :class:`aqc.models.Data2VecAQC` that fine-tuning uses, under the same names
    (``feature_extractor``, ``feature_projection``, ``mask_emb``, ``encoder``), so their state-dict keys
    match the pre-training model's. The teacher, quantizer and heads are dropped."""

    def __init__(self, config: Data2VecAQCConfig):
        super().__init__()
        add_inference_encoder(self, config)

    @classmethod
    def from_model(cls, model) -> "AQCUpstream":
        """Take the submodules (and so the weights) of a loaded :class:`Data2VecAQC`."""
        up = cls.__new__(cls)
        nn.Module.__init__(up)
        up.feature_extractor = model.feature_extractor
        up.feature_projection = model.feature_projection
        up.mask_emb = model.mask_emb
        up.encoder = model.encoder
        return up


def normalize_waveforms(waveforms: Tensor, lengths: Tensor, eps: float = NORMALIZE_EPS) -> Tensor:
    """Zero mean, unit (biased) variance over each row's first ``lengths[b]`` samples; padding set to 0.
    The rule of pre-training's :func:`aqc.augment.normalize` (the reference's ``F.layer_norm``)."""
    x = waveforms.float()
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).to(x.dtype)
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(1, keepdim=True) / n
    var = (((x - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * valid


_OWNED_OPTIMIZERS = "_aqc_owned_optimizers"


def _optimizer_step_hook(frontend_ref: "weakref.ReferenceType[AQCFrontend]"):
    def hook(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        frontend = frontend_ref()
        if frontend is not None:
            frontend._on_optimizer_step(optimizer)
    return hook


class AQCFrontend(AbsFrontend):
    """A pre-trained data2vec-aqc model as an ESPnet ASR frontend (see the module doc).

    Args:
        model_file: aqc model file or ESPnet aqc SSL checkpoint (``config.yaml`` beside it).
        upstream_conf: the upstream's :class:`Data2VecAQCConfig` as a dict (written into the ASR
            experiment's config.yaml automatically; lets a model decode without ``model_file``).
        layer: ``-1`` last layer; an index into the ``num_layers + 1`` hidden states (0 = the encoder
            input after the positional conv and LayerNorm; layers above it are dropped); ``"weighted"``
            a learned softmax-weighted sum of all of them.
        freeze_encoder_steps: optimizer updates during which only the layers after the upstream train.
        feature_grad_mult: 0 freezes the CNN feature encoder (reference); > 0 trains it after
            ``freeze_encoder_steps`` with its gradient scaled by this factor.
        mask_prob, mask_length, mask_min_masks: time masking in training (0 disables it).
        mask_channel_prob, mask_channel_length: channel masking in training (0 disables it).
        layerdrop, dropout, attention_dropout, activation_dropout: override the pre-trained values
            (None keeps them).
        normalize: normalise each waveform (keep True: pre-training did).
        fs: the sampling rate of the input; must be 16 kHz.
    """

    def __init__(
        self,
        model_file: Optional[str] = None,
        upstream_conf: Optional[Dict[str, Any]] = None,
        layer: Union[int, str] = -1,
        freeze_encoder_steps: int = 0,
        feature_grad_mult: float = 0.0,
        mask_prob: float = 0.65,
        mask_length: int = 10,
        mask_min_masks: int = 1,
        mask_channel_prob: float = 0.0,
        mask_channel_length: int = 64,
        layerdrop: Optional[float] = 0.1,
        dropout: Optional[float] = 0.0,
        attention_dropout: Optional[float] = 0.0,
        activation_dropout: Optional[float] = 0.1,
        normalize: bool = True,
        fs: Union[int, str] = SAMPLE_RATE,
    ):
        super().__init__()
        if isinstance(fs, str):
            import humanfriendly

            fs = humanfriendly.parse_size(fs)
        if int(fs) != SAMPLE_RATE:
            raise ValueError(f"frontend aqc: the upstream was pre-trained on 16 kHz audio, got fs={fs}; "
                             "resample the data to 16 kHz")
        for name, p in (("mask_prob", mask_prob), ("mask_channel_prob", mask_channel_prob)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"frontend aqc: {name} must be in [0, 1), got {p}")
        if freeze_encoder_steps < 0:
            raise ValueError("frontend aqc: freeze_encoder_steps must be >= 0")
        if feature_grad_mult < 0:
            raise ValueError(f"frontend aqc: feature_grad_mult must be >= 0 (0 freezes the CNN), got {feature_grad_mult}")

        upstream, config = self._build_upstream(model_file, upstream_conf)
        self.config = config
        self.upstream_conf = config.to_dict()
        num_layers = len(upstream.encoder.layers)

        # layer selection
        if isinstance(layer, str) and layer.strip().lower() != "weighted":
            try:
                layer = int(layer)
            except ValueError:
                raise ValueError(f"frontend aqc: layer must be an integer or 'weighted', got {layer!r}") from None
        self.weighted = isinstance(layer, str)
        if self.weighted:
            self.layer = None
            self.layer_weights = nn.Parameter(torch.zeros(num_layers + 1))
        else:
            if not -(num_layers + 1) <= layer <= num_layers:
                raise ValueError(f"frontend aqc: layer {layer} out of range for {num_layers} layers "
                                 f"(hidden states 0..{num_layers}, or -1)")
            self.layer = layer % (num_layers + 1)
            if self.layer < num_layers:  # the layers above the chosen one are never used
                upstream.encoder.layers = upstream.encoder.layers[: self.layer]
        self.upstream = upstream

        # fine-tuning overrides (fairseq Wav2VecEncoder arg_overrides)
        enc = upstream.encoder
        if layerdrop is not None:
            enc.layerdrop = float(layerdrop)
        if dropout is not None:
            enc.dropout.p = float(dropout)
        for lyr in enc.layers:
            if dropout is not None:
                lyr.dropout.p = float(dropout)
            if attention_dropout is not None:
                lyr.self_attn.dropout = float(attention_dropout)
            if activation_dropout is not None:
                lyr.feed_forward.activation_dropout.p = float(activation_dropout)

        self.feature_grad_mult = float(feature_grad_mult)
        for p in upstream.feature_extractor.parameters():  # frozen unless feature_grad_mult > 0
            p.requires_grad = self.feature_grad_mult > 0

        self.freeze_encoder_steps = int(freeze_encoder_steps)
        self.mask_prob, self.mask_length, self.mask_min_masks = float(mask_prob), int(mask_length), int(mask_min_masks)
        self.mask_channel_prob, self.mask_channel_length = float(mask_channel_prob), int(mask_channel_length)
        self.normalize = bool(normalize)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._register_step_hook()

    def _register_step_hook(self) -> None:
        setattr(self, _OWNED_OPTIMIZERS, weakref.WeakKeyDictionary())
        self._hook_handle = register_optimizer_step_post_hook(_optimizer_step_hook(weakref.ref(self)))
        weakref.finalize(self, self._hook_handle.remove)

    def __getstate__(self):  # picklable / deep-copyable: the copy registers its own hook
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state.pop(_OWNED_OPTIMIZERS, None)
        state.pop("_hook_handle", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._register_step_hook()

    # ------------------------------------------------------------------------------------ building
    @staticmethod
    def _build_upstream(model_file: Optional[str], upstream_conf: Optional[Dict[str, Any]]
                        ) -> Tuple[AQCUpstream, Data2VecAQCConfig]:
        exists = model_file is not None and Path(model_file).is_file()
        if upstream_conf is not None:
            config = Data2VecAQCConfig.from_dict(dict(upstream_conf))
            if exists:
                model = load_model_file(model_file)
                if model.config.to_dict() == config.to_dict():
                    return AQCUpstream.from_model(model), config
                logger.warning("frontend aqc: %s no longer holds the architecture in upstream_conf; not using "
                               "its weights (they are expected from the ASR checkpoint)", model_file)
            else:
                logger.info("frontend aqc: building the upstream from upstream_conf (model_file %s not "
                            "found); its weights come from the ASR checkpoint", model_file)
            return AQCUpstream(config), config
        if model_file is None:
            raise ValueError("frontend aqc: frontend_conf needs model_file (a pre-trained aqc model) or "
                             "upstream_conf")
        if not exists:
            raise FileNotFoundError(f"frontend aqc: pre-trained model file not found: {model_file} (and no "
                                    "upstream_conf in frontend_conf to build the architecture from)")
        model = load_model_file(model_file)
        logger.info("frontend aqc: loaded the pre-trained upstream from %s", model_file)
        return AQCUpstream.from_model(model), model.config

    # -------------------------------------------------------------------------------------- updates
    def _on_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        owned: weakref.WeakKeyDictionary = getattr(self, _OWNED_OPTIMIZERS)
        mine = owned.get(optimizer)
        if mine is None:
            ids = {id(p) for p in self.parameters()}
            mine = any(id(p) in ids for group in optimizer.param_groups for p in group["params"])
            owned[optimizer] = mine
        if mine:
            self.num_updates += 1

    @property
    def encoder_frozen(self) -> bool:
        """True while the upstream (beyond the CNN) is frozen: fewer than freeze_encoder_steps updates."""
        return int(self.num_updates) < self.freeze_encoder_steps

    def output_size(self) -> int:
        return self.config.embed_dim

    # -------------------------------------------------------------------------------------- forward
    def _mask(self, x: Tensor, frame_lengths: Tensor) -> Tensor:
        batch, frames, channels = x.shape
        if self.mask_prob > 0:
            mask = compute_span_mask(frame_lengths.cpu(), frames, self.mask_prob, self.mask_length,
                                     self.mask_min_masks).to(x.device)
            x = torch.where(mask.unsqueeze(-1), self.upstream.mask_emb.to(x.dtype), x)
        if self.mask_channel_prob > 0:
            cmask = compute_span_mask(torch.full((batch,), channels, dtype=torch.long), channels,
                                      self.mask_channel_prob, self.mask_channel_length, min_masks=0,
                                      min_masked_frames=0).to(x.device)
            x = x.masked_fill(cmask.unsqueeze(1), 0.0)
        return x

    def forward(self, input: Tensor, input_lengths: Tensor) -> Tuple[Tensor, Tensor]:
        """(B, L) 16 kHz waveforms and lengths -> (B, T, D) features and frame lengths."""
        up = self.upstream
        if input.dim() == 3 and input.shape[-1] == 1:
            input = input.squeeze(-1)
        if input.dim() != 2:
            raise ValueError(f"frontend aqc expects (batch, samples) waveforms, got {tuple(input.shape)}")
        lengths = input_lengths.to(input.device).long()
        x = normalize_waveforms(input, lengths) if self.normalize else input.float()

        frozen = self.training and self.encoder_frozen
        train_cnn = self.training and not frozen and self.feature_grad_mult > 0
        with contextlib.nullcontext() if train_cnn else torch.no_grad():
            feats = up.feature_extractor(x, grad_mult=self.feature_grad_mult if train_cnn else 1.0)  # (B, C, T)
        frames = feats.shape[-1]
        frame_lengths = up.feature_extractor.output_lengths(lengths).clamp(max=frames)
        if int(frame_lengths.min()) < 1:
            raise ValueError(f"frontend aqc: an utterance is shorter than the CNN's receptive field "
                             f"({up.feature_extractor.receptive_field} samples); filter it out")
        padding_mask = torch.arange(frames, device=feats.device)[None, :] >= frame_lengths[:, None]
        if not bool(padding_mask.any()):
            padding_mask = None

        with torch.no_grad() if frozen else contextlib.nullcontext():
            _, h = up.feature_projection(feats.transpose(1, 2))
            if self.training:
                h = self._mask(h, frame_lengths)
            out = up.encoder(h, padding_mask)
        hidden: List[Tensor] = out.hidden_states
        if self.weighted:
            w = torch.softmax(self.layer_weights, dim=0)
            feats_out = (torch.stack(hidden, 0) * w.to(hidden[0].dtype)[:, None, None, None]).sum(0)
        else:
            feats_out = hidden[-1]  # the encoder stops at the chosen layer
        return feats_out, frame_lengths


# ------------------------------------------------------------------------------------ registration
def _record_upstream_conf(args, model) -> None:
    """Write the upstream's config into ``args.frontend_conf`` (dumped as config.yaml by ESPnet)."""
    frontend = getattr(model, "frontend", None)
    if isinstance(frontend, AQCFrontend) and isinstance(getattr(args, "frontend_conf", None), dict):
        args.frontend_conf["upstream_conf"] = frontend.upstream_conf


def register() -> None:
    """Register ``frontend: aqc`` in ESPnet's ASR task, and route ESPnet's checkpoint loading and saving
    through aqc's rules (:mod:`aqc.espnet.checkpoint_io`); idempotent, runs on import of this module."""
    from espnet2.tasks import asr as asr_task

    from .checkpoint_io import install

    install()
    asr_task.frontend_choices.classes["aqc"] = AQCFrontend
    task = asr_task.ASRTask
    if getattr(task.build_model, "_aqc_wrapped", False):
        return
    original = task.build_model.__func__

    def build_model(cls, args):
        model = original(cls, args)
        _record_upstream_conf(args, model)
        return model

    build_model._aqc_wrapped = True
    build_model.__doc__ = original.__doc__
    task.build_model = classmethod(build_model)


register()
