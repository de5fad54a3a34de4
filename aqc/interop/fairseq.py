"""fairseq data2vec / data2vec-aqc checkpoints <-> aqc models, without fairseq.

A fairseq checkpoint is ``{"cfg": {"model": {...}, "task": {...}, ...}, "model": state_dict, ...}``
(``"args"``, an ``argparse.Namespace``, instead of ``"cfg"`` in old ones); s3prl's converted
checkpoints are ``{"task_cfg", "model_cfg", "model_weight"}`` with the same names. Both architectures
register as ``data2vec_audio``; the data2vec-aqc fork adds ``quantizer``/``project_q``/``contr_proj``.
The EMA teacher is the nested dict ``model["_ema"]`` (encoder-relative names, fp32).

Option names follow fairseq's ``Wav2Vec2Config``/``Data2VecAudioConfig`` and the fork's additions
(``final_proj_dim``, ``cluster_factor``, ``scale_factor``).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

from torch import Tensor

from aqc.models import Data2VecAQC, Data2VecAQCConfig

from .checkpoint import PathLike, read_checkpoint, resolve_interpolations
from .keymap import (EMA_PREFIX, EXTRA_STATE_KEY, build_key_map, fairseq_rules, flatten_ema, is_inference_key,
                     map_key, nest_ema)

ARCHITECTURE = "data2vec_audio"
FAIRSEQ_DEFAULT_CONV = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
_EXTRACTOR_MODES = {"layer_norm": "layer_norm", "default": "group_norm"}
_QUANTIZER_KEYS = ("quantizer.vars", "quantizer.weight_proj.weight")


class UnsupportedCheckpointError(ValueError):
    """A readable checkpoint whose model aqc cannot represent."""


@dataclass
class ImportReport:
    """What :func:`import_fairseq_checkpoint` did, for the user to check."""

    architecture: str  # "data2vec-aqc" or "data2vec"
    loaded: int = 0  # aqc tensors filled from the checkpoint
    dropped: Dict[str, str] = field(default_factory=dict)  # checkpoint key -> why it was not used
    initialised: Dict[str, str] = field(default_factory=dict)  # aqc key group -> how it was filled instead
    notes: List[str] = field(default_factory=list)
    num_updates: int = 0

    def lines(self) -> List[str]:
        out = [f"architecture: {self.architecture}", f"loaded tensors: {self.loaded}",
               f"num_updates: {self.num_updates}"]
        out += [f"dropped {key}: {why}" for key, why in sorted(self.dropped.items())]
        out += [f"initialised {key}: {how}" for key, how in sorted(self.initialised.items())]
        out += [f"note: {note}" for note in self.notes]
        return out


# ------------------------------------------------------------------------------- config: fairseq
def parse_conv_layers(spec: Any) -> List[Tuple[int, int, int]]:
    """fairseq's ``conv_feature_layers`` (a Python expression such as ``"[(512, 10, 5)] * 2"``) without
    ``eval``: only list/tuple literals of ints, ``+`` and ``*`` are accepted."""
    if isinstance(spec, (list, tuple)):
        return [tuple(int(v) for v in layer) for layer in spec]

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        layers = [tuple(int(v) for v in layer) for layer in ev(ast.parse(str(spec), mode="eval"))]
    except (SyntaxError, ValueError, TypeError) as exc:
        raise UnsupportedCheckpointError(f"cannot parse conv_feature_layers {spec!r}: {exc}") from exc
    _require(bool(layers) and all(len(layer) == 3 for layer in layers),
             f"conv_feature_layers {spec!r}: every layer must be (dim, kernel, stride)")
    return layers


def format_conv_layers(conv_layers) -> str:
    return "[" + ", ".join(f"({c}, {k}, {s})" for c, k, s in conv_layers) + "]"


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UnsupportedCheckpointError(message)


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):  # None, "???" or an unresolved interpolation
        return default


def config_from_fairseq(model_cfg: Mapping[str, Any], has_quantizer: bool, add_quantizer: bool = False,
                        pos_conv_mask_padding: bool = True) -> Tuple[Data2VecAQCConfig, List[str]]:
    """An aqc config from a fairseq ``cfg["model"]``; refuses options aqc cannot represent.

    Returns the config and notes on options that only matter for continued pre-training.
    """
    g = model_cfg.get
    notes: List[str] = []
    _require(g("layer_type", "transformer") == "transformer", f"layer_type {g('layer_type')!r}: only transformer")
    _require(not g("layer_norm_first", False), "layer_norm_first=True (pre-LN) is not data2vec's post-LN encoder")
    _require(g("activation_fn", "gelu") == "gelu", f"activation_fn {g('activation_fn')!r}: only gelu")
    _require(not g("conv_pos_batch_norm", False), "conv_pos_batch_norm=True is not supported")
    mode = g("extractor_mode", "default")
    _require(mode in _EXTRACTOR_MODES, f"extractor_mode {mode!r}: expected layer_norm or default")
    depth = int(g("pos_conv_depth", 1))
    _require(depth > 1, f"pos_conv_depth={depth}: a single weight-normalised positional conv (wav2vec 2.0 "
                        "style) is not data2vec's stack of LayerNorm conv blocks")
    conv_pos = int(g("conv_pos", 128))
    embed_dim = int(g("encoder_embed_dim", 768))
    num_layers = int(g("encoder_layers", 12))
    c: Dict[str, Any] = dict(
        conv_layers=parse_conv_layers(g("conv_feature_layers", FAIRSEQ_DEFAULT_CONV)),
        extractor_mode=_EXTRACTOR_MODES[mode],
        conv_bias=bool(g("conv_bias", False)),
        feature_grad_mult=float(g("feature_grad_mult", 1.0)),
        embed_dim=embed_dim,
        ffn_dim=int(g("encoder_ffn_embed_dim", 3072)),
        num_layers=num_layers,
        num_heads=int(g("encoder_attention_heads", 12)),
        dropout=float(g("dropout", 0.1)),
        attention_dropout=float(g("attention_dropout", 0.1)),
        activation_dropout=float(g("activation_dropout", 0.0)),
        encoder_dropout_input=float(g("dropout_input", 0.0)),
        layerdrop=float(g("encoder_layerdrop", 0.0)),
        pos_conv_kernel=max(3, conv_pos // depth),  # fairseq's own rule for the per-block kernel
        pos_conv_groups=int(g("conv_pos_groups", 16)),
        pos_conv_depth=depth,
        pos_conv_mask_padding=pos_conv_mask_padding,
        mask_prob=float(g("mask_prob", 0.65)),
        mask_length=int(g("mask_length", 10)),
        ema_decay=float(g("ema_decay", 0.999)),
        ema_end_decay=float(g("ema_end_decay", 0.9999)),
        ema_anneal_end_step=_int_or(g("ema_anneal_end_step"), Data2VecAQCConfig.ema_anneal_end_step),
        top_k_layers=min(int(g("average_top_k_layers", 8)), num_layers),
        loss_beta=float(g("loss_beta", 0.0) or 0.0),
        loss_scale=None if g("loss_scale") is None else float(g("loss_scale")),
        min_target_std=float(g("min_target_var", 0.1)),
        min_pred_std=float(g("min_pred_var", 0.01)),
    )
    if has_quantizer or add_quantizer:
        _require(int(g("quantizer_depth", 1)) == 1, "quantizer_depth > 1 is not supported")
        final_dim = int(g("final_proj_dim", 256))
        latent_dim = int(g("latent_dim", 0) or 0)
        _require(latent_dim in (0, final_dim), f"latent_dim={latent_dim} differs from final_proj_dim={final_dim}: "
                                               "aqc's project_q maps the codebook dimension onto itself")
        temp = g("latent_temp", (2.0, 0.5, 0.999995))
        if isinstance(temp, str):
            temp = ast.literal_eval(temp)
        c.update(use_quantizer=True, use_clustering=True, latent_vars=int(g("latent_vars", 320)),
                 latent_groups=int(g("latent_groups", 2)), codebook_dim=final_dim,
                 latent_temp=tuple(float(v) for v in temp), num_negatives=int(g("num_negatives", 100)),
                 logit_temp=float(g("logit_temp", 0.1)), cluster_factor=int(g("cluster_factor", 16)),
                 scale_factor=float(g("scale_factor", 0.3)))
        if int(g("cross_sample_negatives", 0) or 0):
            notes.append("cross_sample_negatives > 0 is ignored (aqc samples negatives within an utterance)")
    else:
        c.update(use_quantizer=False, use_clustering=False)
    for option, wanted in (("instance_norm_target_layer", True), ("layer_norm_target_layer", False),
                           ("batch_norm_target_layer", False), ("group_norm_target_layer", False),
                           ("instance_norm_targets", False), ("layer_norm_targets", False),
                           ("ema_transformer_only", True), ("ema_layers_only", True)):
        if option in model_cfg and bool(model_cfg[option]) != wanted:
            notes.append(f"{option}={model_cfg[option]} differs from aqc's fixed choice ({wanted}): features are "
                         "unaffected, continued pre-training builds its targets the aqc way")
    return Data2VecAQCConfig(**c), notes


def config_to_fairseq(config: Data2VecAQCConfig) -> Dict[str, Any]:
    """A fairseq/s3prl ``model_cfg`` (plain types only) for an aqc config.

    Refuses what fairseq's data2vec cannot build: a depth-1 positional conv (fairseq then builds the
    wav2vec 2.0 weight-norm conv) or a kernel below 3 (fairseq's ``max(3, conv_pos // depth)``).
    """
    c = config
    _require(c.pos_conv_depth > 1, "pos_conv_depth=1 cannot be written for fairseq/s3prl: with depth 1 they "
                                   "build wav2vec 2.0's weight-normalised positional conv instead")
    _require(c.pos_conv_kernel >= 3, "pos_conv_kernel < 3 cannot be written for fairseq/s3prl (kernel = "
                                     "max(3, conv_pos // pos_conv_depth))")
    cfg: Dict[str, Any] = {
        "_name": ARCHITECTURE,
        "extractor_mode": "layer_norm" if c.extractor_mode == "layer_norm" else "default",
        "conv_feature_layers": format_conv_layers(c.conv_layers),
        "conv_bias": c.conv_bias,
        "feature_grad_mult": c.feature_grad_mult,
        "encoder_layers": c.num_layers,
        "encoder_embed_dim": c.embed_dim,
        "encoder_ffn_embed_dim": c.ffn_dim,
        "encoder_attention_heads": c.num_heads,
        "activation_fn": "gelu",
        "layer_type": "transformer",
        "layer_norm_first": False,
        "dropout": c.dropout,
        "attention_dropout": c.attention_dropout,
        "activation_dropout": c.activation_dropout,
        "encoder_layerdrop": c.layerdrop,
        "dropout_input": c.encoder_dropout_input,
        "dropout_features": 0.0,
        "conv_pos": c.pos_conv_kernel * c.pos_conv_depth,
        "conv_pos_groups": c.pos_conv_groups,
        "pos_conv_depth": c.pos_conv_depth,
        "mask_prob": c.mask_prob,
        "mask_length": c.mask_length,
        "mask_selection": "static",
        "mask_other": 0.0,
        "no_mask_overlap": False,
        "mask_min_space": 1,
        "require_same_masks": True,
        "mask_dropout": 0.0,
        "mask_channel_prob": 0.0,
        "mask_channel_length": 10,
        "loss_beta": c.loss_beta,
        "loss_scale": c.loss_scale,
        "average_top_k_layers": c.top_k_layers,
        "instance_norm_target_layer": True,
        "layer_norm_target_layer": False,
        "batch_norm_target_layer": False,
        "group_norm_target_layer": False,
        "instance_norm_targets": False,
        "layer_norm_targets": False,
        "ema_decay": c.ema_decay,
        "ema_end_decay": c.ema_end_decay,
        "ema_anneal_end_step": c.ema_anneal_end_step,
        "ema_transformer_only": True,
        "ema_layers_only": True,
        "min_target_var": c.min_target_std,
        "min_pred_var": c.min_pred_std,
        "required_seq_len_multiple": 2,
    }
    if c.use_quantizer:
        cfg.update({
            "latent_vars": c.latent_vars,
            "latent_groups": c.latent_groups,
            "latent_dim": 0,
            "final_proj_dim": c.codebook_dim,
            "latent_temp": list(c.latent_temp),
            "quantizer_depth": 1,
            "num_negatives": c.num_negatives,
            "cross_sample_negatives": 0,
            "logit_temp": c.logit_temp,
            "cluster_factor": c.cluster_factor,
            "scale_factor": c.scale_factor,
        })
    return cfg


# -------------------------------------------------------------------------------- weights: export
def fairseq_state_dict(model: Data2VecAQC, inference_only: bool = False) -> Dict[str, Any]:
    """The model's tensors under fairseq names, teacher nested under ``_ema``.

    ``inference_only`` keeps the encoder and its EMA teacher (what s3prl loads) and leaves out
    ``final_proj`` and the quantizer heads.
    """
    state = model.state_dict()
    mapping, unmapped = build_key_map([k for k in state if k != EXTRA_STATE_KEY],
                                      fairseq_rules(model.config.extractor_mode))
    if unmapped:
        raise AssertionError(f"aqc parameters without a fairseq name: {unmapped}")
    flat = {theirs: state[ours].detach().clone().contiguous() for ours, theirs in mapping.items()
            if not inference_only or is_inference_key(ours) or ours.startswith("teacher.")}
    return nest_ema(flat)


# -------------------------------------------------------------------------------- weights: import
def _model_config_section(ckpt: Mapping[str, Any]) -> Tuple[Dict[str, Any], Mapping[str, Any]]:
    """(model cfg, weights) of a fairseq or s3prl-converted checkpoint."""
    if "model_weight" in ckpt and "model_cfg" in ckpt:  # s3prl's converted layout
        return dict(ckpt["model_cfg"] or {}), ckpt["model_weight"]
    if "model" not in ckpt or not isinstance(ckpt["model"], Mapping):
        raise UnsupportedCheckpointError("not a fairseq checkpoint: no 'model' state dict (nor s3prl's "
                                         "'model_weight'); top-level keys: " + ", ".join(map(str, list(ckpt)[:12])))
    cfg = ckpt.get("cfg")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        root = dict(cfg)
        model_cfg = {k: resolve_interpolations(root, v) for k, v in cfg["model"].items()}
        return model_cfg, ckpt["model"]
    args = ckpt.get("args")
    if isinstance(args, Mapping):  # pre-hydra checkpoints: one flat Namespace holds everything
        model_cfg = dict(args)
        model_cfg.setdefault("_name", model_cfg.get("arch"))
        return model_cfg, ckpt["model"]
    raise UnsupportedCheckpointError("fairseq checkpoint without a model config ('cfg' or 'args')")


def _architecture(model_cfg: Mapping[str, Any], weights: Mapping[str, Any]) -> str:
    name = model_cfg.get("_name") or model_cfg.get("arch")
    if name is None and "encoder.pos_conv.0.0.weight" in weights and "post_extract_proj.weight" in weights:
        name = ARCHITECTURE  # s3prl configs may lack _name; the weights are unmistakable
    if name != ARCHITECTURE:
        hint = " (a fine-tuned model: import its pre-trained checkpoint)" if str(name).endswith("_ctc") else ""
        raise UnsupportedCheckpointError(
            f"unsupported architecture {name!r}{hint}: aqc imports fairseq '{ARCHITECTURE}' checkpoints "
            "(data2vec 1.0 audio and data2vec-aqc)")
    return "data2vec-aqc" if all(k in weights for k in _QUANTIZER_KEYS) else "data2vec"


def _ema_entries(flat: Dict[str, Any], report: ImportReport) -> Dict[str, Any]:
    """With ``ema_transformer_only=False`` fairseq's EMA holds the whole model: keep its encoder."""
    if not any(k.startswith(EMA_PREFIX + "encoder.") for k in flat):
        return flat
    out = {}
    for key, value in flat.items():
        if key.startswith(EMA_PREFIX + "encoder."):
            out[EMA_PREFIX + key[len(EMA_PREFIX + "encoder."):]] = value
        elif key.startswith(EMA_PREFIX):
            report.dropped[key] = "EMA copy of a module outside the encoder (aqc's teacher shares the student's CNN)"
        else:
            out[key] = value
    return out


def _fill_from(flat: Mapping[str, Any], mapping: Dict[str, str], target: Dict[str, Tensor]
               ) -> Tuple[List[str], List[str], bool]:
    """Copy mapped tensors into ``target``; returns (aqc keys missing in the checkpoint, consumed keys,
    whether any tensor changed dtype)."""
    missing, consumed, cast = [], [], False
    for ours, theirs in mapping.items():
        if theirs not in flat:
            missing.append(ours)
            continue
        value = flat[theirs]
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(target[ours].shape):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise UnsupportedCheckpointError(f"{theirs}: shape {shape} does not fit aqc's {ours} "
                                             f"{tuple(target[ours].shape)} (config and weights disagree)")
        cast |= value.dtype != target[ours].dtype
        target[ours] = value.detach().to(target[ours].dtype).clone()
        consumed.append(theirs)
    return missing, consumed, cast


def _dropped_reason(key: str) -> str:
    if key.startswith(EMA_PREFIX):
        return "EMA entry with no counterpart in aqc's teacher"
    if key.startswith(("quantizer.", "project_q.", "contr_proj.")):
        return "quantizer head not used (the model is imported without a quantizer)"
    return "no counterpart in aqc's model"


def import_fairseq_state(ckpt: Mapping[str, Any], add_quantizer: bool = False, pos_conv_mask_padding: bool = True
                         ) -> Tuple[Data2VecAQC, ImportReport]:
    """An aqc model from an already read fairseq/s3prl checkpoint (see :func:`import_fairseq_checkpoint`)."""
    if not isinstance(ckpt, Mapping):
        raise UnsupportedCheckpointError(f"not a fairseq checkpoint: the file holds a {type(ckpt).__name__}")
    model_cfg, weights = _model_config_section(ckpt)
    architecture = _architecture(model_cfg, weights)
    report = ImportReport(architecture=architecture)
    has_quantizer = architecture == "data2vec-aqc"
    aqc_section = ckpt.get("aqc") if isinstance(ckpt.get("aqc"), Mapping) else None
    if aqc_section and "config" in aqc_section:
        # Our own s3prl export: the exact aqc options (dropouts, loss weights, ...) travel with it.
        exact = dict(aqc_section["config"])
        if not has_quantizer and not add_quantizer:
            exact.update(use_quantizer=False, use_clustering=False)
        exact["pos_conv_mask_padding"] = pos_conv_mask_padding
        config, notes = Data2VecAQCConfig.from_dict(exact), ["options from the checkpoint's aqc section"]
    else:
        config, notes = config_from_fairseq(model_cfg, has_quantizer, add_quantizer, pos_conv_mask_padding)
    report.notes += notes

    model = Data2VecAQC(config)
    target = model.state_dict()
    mapping, unmapped = build_key_map([k for k in target if k != EXTRA_STATE_KEY], fairseq_rules(config.extractor_mode))
    if unmapped:
        raise AssertionError(f"aqc parameters without a fairseq name: {unmapped}")
    flat = _ema_entries(flatten_ema(dict(weights)), report)
    missing, consumed, cast = _fill_from(flat, mapping, target)
    report.loaded = len(consumed)
    if cast:
        report.notes.append("some tensors were converted to float32 (fp16 checkpoint)")
    _account_for_missing(missing, target, config, report, add_quantizer)
    model.load_state_dict(target)
    if any(k.startswith("teacher.") for k in missing):  # all of them: partial teachers were refused
        model.teacher.encoder.load_state_dict(model.encoder.state_dict())
    for key in sorted(set(flat) - set(consumed)):
        if key.startswith(("encoder.", "feature_extractor.")) and not key.startswith(EMA_PREFIX):
            raise UnsupportedCheckpointError(f"{key}: an encoder parameter aqc has no place for (a variant of the "
                                             "architecture aqc does not implement)")
        report.dropped.setdefault(key, _dropped_reason(key))
    report.num_updates = _num_updates(ckpt)
    model.set_num_updates(report.num_updates)
    return model, report


def _account_for_missing(missing: List[str], target: Dict[str, Tensor], config: Data2VecAQCConfig,
                         report: ImportReport, add_quantizer: bool) -> None:
    """Decide, per group of aqc parameters the checkpoint lacks, whether that is an error."""
    teacher = [k for k in missing if k.startswith("teacher.")]
    teacher_total = sum(1 for k in target if k.startswith("teacher."))
    if teacher and len(teacher) != teacher_total:
        raise UnsupportedCheckpointError(f"the EMA teacher ('_ema') is incomplete: {len(teacher)} of {teacher_total} "
                                         f"tensors missing, e.g. {teacher[0]}")
    if teacher:
        report.initialised["teacher.*"] = "copied from the student (the checkpoint has no EMA teacher '_ema')"
    heads = [k for k in missing if k.startswith(("quantizer.", "contr_proj."))]
    if heads:
        if not add_quantizer:
            raise UnsupportedCheckpointError(f"quantizer weights missing: {heads[:3]}")
        report.initialised["quantizer.*, contr_proj.*"] = "fresh initialisation (--add_quantizer)"
    if any(k.startswith("final_proj.") for k in missing):
        report.initialised["final_proj.*"] = "fresh initialisation (not in the checkpoint)"
    rest = [k for k in missing if not k.startswith(("teacher.", "quantizer.", "contr_proj.", "final_proj."))]
    if rest:
        raise UnsupportedCheckpointError(f"the checkpoint lacks {len(rest)} encoder tensor(s), e.g. "
                                         f"{mapping_hint(rest[0], config)}")


def mapping_hint(aqc_key: str, config: Data2VecAQCConfig) -> str:
    return f"{map_key(aqc_key, fairseq_rules(config.extractor_mode))} (aqc {aqc_key})"


def _num_updates(ckpt: Mapping[str, Any]) -> int:
    history = ckpt.get("optimizer_history")
    if isinstance(history, list) and history and isinstance(history[-1], Mapping):
        return _int_or(history[-1].get("num_updates"), 0)
    aqc_section = ckpt.get("aqc")
    if isinstance(aqc_section, Mapping):
        return _int_or(aqc_section.get("num_updates"), 0)
    return 0


def import_fairseq_checkpoint(path: PathLike, add_quantizer: bool = False, pos_conv_mask_padding: bool = True
                              ) -> Tuple[Data2VecAQC, ImportReport]:
    """Build an aqc model from a fairseq data2vec / data2vec-aqc checkpoint (or an s3prl-converted one).

    The file is read with a restricted unpickler (no fairseq or omegaconf needed, no code from the
    file run). The EMA teacher ``_ema`` goes into aqc's teacher; without it the teacher starts as a
    copy of the student. A plain data2vec checkpoint gives a model without quantizer
    (``use_quantizer=False``) unless ``add_quantizer`` asks for a freshly initialised one (to continue
    pre-training data2vec-aqc style). ``pos_conv_mask_padding`` is aqc's choice for padded batches
    (fairseq behaves as ``False``; unpadded inputs give the same features either way).
    """
    return import_fairseq_state(read_checkpoint(path), add_quantizer, pos_conv_mask_padding)
