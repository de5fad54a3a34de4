"""Parameter-name maps between aqc's :class:`~aqc.models.Data2VecAQC` and other toolkits.

The model never knows these names. A map is a list of (regex over an aqc key, replacement) rules;
:func:`build_key_map` applies them to the keys of a model built from the config, so the same rules
serve both directions (``{aqc key: other key}`` and its inverse) and a parameter that no rule covers
is reported instead of being silently lost.

fairseq names (``Data2VecAudioModel`` of fairseq's data2vec and of the data2vec-aqc fork; s3prl
keeps them): ``feature_extractor.conv_layers.{i}.0`` conv, ``.2.1`` its LayerNorm (``layer_norm``
mode) or ``conv_layers.0.2`` the GroupNorm (``default`` mode), ``layer_norm`` and
``post_extract_proj`` the feature projection, ``encoder.pos_conv.{i}.0`` the positional convs,
``encoder.layers.{i}.fc1/fc2``, ``quantizer.vars``, ``project_q``, and the EMA teacher under the
nested dict ``_ema`` with encoder-relative names (written here as ``_ema.<name>``).

Hugging Face names (``transformers.Data2VecAudioModel``): ``masked_spec_embed``,
``encoder.pos_conv_embed.layers.{i}.conv``, ``encoder.layers.{i}.attention``, ``.layer_norm`` (after
attention), ``feed_forward.intermediate_dense/output_dense``.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

Rule = Tuple[str, str]
EMA_PREFIX = "_ema."

# Parameters the inference encoder needs (what Hugging Face and s3prl carry) and training-only ones.
INFERENCE_PREFIXES = ("mask_emb", "feature_extractor.", "feature_projection.", "encoder.")
TRAINING_PREFIXES = ("final_proj.", "quantizer.", "contr_proj.", "teacher.")
EXTRA_STATE_KEY = "_extra_state"  # the update counter; fairseq keeps it in optimizer_history


def is_inference_key(key: str) -> bool:
    return key.startswith(INFERENCE_PREFIXES)


# ------------------------------------------------------------------------------------------- rules
def _encoder_rules_fairseq() -> List[Rule]:
    """Transformer encoder, names relative to the encoder (the EMA teacher uses them bare)."""
    return [
        (r"pos_conv\.layers\.(\d+)\.conv\.(weight|bias)", r"pos_conv.\1.0.\2"),
        (r"layer_norm\.(weight|bias)", r"layer_norm.\1"),
        (r"layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)", r"layers.\1.self_attn.\2.\3"),
        (r"layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"layers.\1.self_attn_layer_norm.\2"),
        (r"layers\.(\d+)\.feed_forward\.(fc1|fc2)\.(weight|bias)", r"layers.\1.\2.\3"),
        (r"layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"layers.\1.final_layer_norm.\2"),
    ]


def _prefixed(rules: Iterable[Rule], ours: str, theirs: str) -> List[Rule]:
    return [(re.escape(ours) + pattern, theirs + replacement) for pattern, replacement in rules]


def fairseq_rules(extractor_mode: str) -> List[Rule]:
    """aqc -> fairseq data2vec(-aqc) names for the whole model, teacher included."""
    norm = r"feature_extractor.conv_layers.\1.2.1.\2" if extractor_mode == "layer_norm" else \
        r"feature_extractor.conv_layers.\1.2.\2"
    return [
        (r"mask_emb", "mask_emb"),
        (r"feature_extractor\.conv_layers\.(\d+)\.conv\.(weight|bias)", r"feature_extractor.conv_layers.\1.0.\2"),
        (r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", norm),
        (r"feature_projection\.layer_norm\.(weight|bias)", r"layer_norm.\1"),
        (r"feature_projection\.projection\.(weight|bias)", r"post_extract_proj.\1"),
        *_prefixed(_encoder_rules_fairseq(), "encoder.", "encoder."),
        (r"final_proj\.(weight|bias)", r"final_proj.\1"),
        (r"quantizer\.codevectors", "quantizer.vars"),
        (r"quantizer\.weight_proj\.(weight|bias)", r"quantizer.weight_proj.\1"),
        (r"quantizer\.project_q\.(weight|bias)", r"project_q.\1"),
        (r"contr_proj\.(weight|bias)", r"contr_proj.\1"),
        *_prefixed(_encoder_rules_fairseq(), "teacher.encoder.", EMA_PREFIX),
    ]


def hf_rules() -> List[Rule]:
    """aqc -> transformers ``Data2VecAudioModel`` names (inference encoder only)."""
    return [
        (r"mask_emb", "masked_spec_embed"),
        (r"feature_extractor\.conv_layers\.(\d+)\.(conv|layer_norm)\.(weight|bias)",
         r"feature_extractor.conv_layers.\1.\2.\3"),
        (r"feature_projection\.(layer_norm|projection)\.(weight|bias)", r"feature_projection.\1.\2"),
        (r"encoder\.pos_conv\.layers\.(\d+)\.conv\.(weight|bias)", r"encoder.pos_conv_embed.layers.\1.conv.\2"),
        (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
        (r"encoder\.layers\.(\d+)\.self_attn\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
         r"encoder.layers.\1.attention.\2.\3"),
        (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
        (r"encoder\.layers\.(\d+)\.feed_forward\.fc1\.(weight|bias)",
         r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
        (r"encoder\.layers\.(\d+)\.feed_forward\.fc2\.(weight|bias)",
         r"encoder.layers.\1.feed_forward.output_dense.\2"),
        (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
    ]


# ------------------------------------------------------------------------------------------- maps
def map_key(key: str, rules: Sequence[Rule]) -> Optional[str]:
    """The other toolkit's name of aqc ``key`` (first matching rule), or None."""
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(replacement)
    return None


def build_key_map(keys: Iterable[str], rules: Sequence[Rule]) -> Tuple[Dict[str, str], List[str]]:
    """({aqc key: other key} for every key a rule covers, [aqc keys no rule covers])."""
    mapping: Dict[str, str] = {}
    unmapped: List[str] = []
    for key in keys:
        other = map_key(key, rules)
        if other is None:
            unmapped.append(key)
        else:
            mapping[key] = other
    if len(set(mapping.values())) != len(mapping):
        raise AssertionError("key map is not one-to-one")  # a rule bug, not a user error
    return mapping, unmapped


def flatten_ema(state: Dict[str, object]) -> Dict[str, object]:
    """fairseq's nested ``_ema`` dict -> flat ``_ema.<name>`` keys (other keys unchanged)."""
    flat = {k: v for k, v in state.items() if k != "_ema"}
    ema = state.get("_ema")
    if isinstance(ema, dict):
        flat.update({EMA_PREFIX + k: v for k, v in ema.items()})
    return flat


def nest_ema(flat: Dict[str, object]) -> Dict[str, object]:
    """Inverse of :func:`flatten_ema`; always writes ``_ema`` (s3prl deletes it unconditionally)."""
    nested: Dict[str, object] = {k: v for k, v in flat.items() if not k.startswith(EMA_PREFIX)}
    nested["_ema"] = {k[len(EMA_PREFIX):]: v for k, v in flat.items() if k.startswith(EMA_PREFIX)}
    return nested
