"""Export to Hugging Face ``transformers.Data2VecAudioModel`` and load such folders back.

The export carries the inference encoder only (CNN, feature projection, ``mask_emb`` as
``masked_spec_embed``, positional convs, transformer); the teacher, quantizer and heads stay behind.
Its ``hidden_states`` (``output_hidden_states=True``) are aqc's ``extract_features`` outputs: the
encoder input after the positional conv and LayerNorm, then every layer.

Padded batches: Hugging Face (like fairseq) zeroes padded frames only before the *first* positional
conv block, which is aqc's ``pos_conv_mask_padding=False``. With aqc's default (True) the features of
an utterance do not depend on how it was padded; Hugging Face's do, slightly, near the end of shorter
utterances. Unpadded inputs (one utterance, or equal lengths) give the same features either way.

Config names (transformers 5.x ``configuration_data2vec_audio.py``): ``conv_dim``/``conv_kernel``/
``conv_stride``, ``conv_pos_kernel_size`` (per block), ``num_conv_pos_embeddings`` (the number of
blocks), ``num_conv_pos_embedding_groups``, ``layer_norm_eps``. Its feature encoder always has a
LayerNorm in every conv layer, so ``extractor_mode="group_norm"`` cannot be exported.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor

from aqc.models import Data2VecAQC, Data2VecAQCConfig

from .checkpoint import PathLike, read_checkpoint
from .keymap import build_key_map, hf_rules, is_inference_key

MODEL_TYPE = "data2vec-audio"
AQC_CONFIG_FILE = "aqc_config.json"  # exact aqc options beside config.json (transformers ignores it)
LAYER_NORM_EPS = 1e-5  # every aqc LayerNorm uses torch's default
SAMPLE_RATE = 16000


class HFExportError(ValueError):
    """The model (or folder) cannot be represented by transformers' Data2VecAudio."""


# ------------------------------------------------------------------------------------------ export
def check_exportable(config: Data2VecAQCConfig) -> None:
    if config.extractor_mode != "layer_norm":
        raise HFExportError(
            f"extractor_mode={config.extractor_mode!r} cannot be exported to Hugging Face: "
            "transformers' Data2VecAudio has a LayerNorm in every conv layer (extractor_mode='layer_norm'). "
            "Export to s3prl instead (--to s3prl), which builds fairseq's 'default' (group norm) extractor.")


def hf_config_kwargs(config: Data2VecAQCConfig) -> Dict[str, Any]:
    """``transformers.Data2VecAudioConfig`` arguments for an aqc config."""
    check_exportable(config)
    c = config
    return dict(
        hidden_size=c.embed_dim,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        intermediate_size=c.ffn_dim,
        hidden_act="gelu",
        hidden_dropout=c.dropout,
        attention_dropout=c.attention_dropout,
        activation_dropout=c.activation_dropout,
        feat_proj_dropout=c.encoder_dropout_input,
        layerdrop=c.layerdrop,
        layer_norm_eps=LAYER_NORM_EPS,
        feat_extract_activation="gelu",
        conv_dim=[int(ch) for ch, _, _ in c.conv_layers],
        conv_kernel=[int(k) for _, k, _ in c.conv_layers],
        conv_stride=[int(s) for _, _, s in c.conv_layers],
        conv_bias=c.conv_bias,
        conv_pos_kernel_size=c.pos_conv_kernel,
        num_conv_pos_embeddings=c.pos_conv_depth,
        num_conv_pos_embedding_groups=c.pos_conv_groups,
        # Fine-tuning SpecAugment in transformers, not pre-training masking: keep its default
        # probability (it must stay > 0 for masked_spec_embed to exist) but our span length.
        mask_time_length=c.mask_length,
        architectures=["Data2VecAudioModel"],
    )


def hf_state_dict(model: Data2VecAQC) -> Dict[str, Tensor]:
    """The inference encoder's tensors under transformers' names."""
    state = model.state_dict()
    mapping, unmapped = build_key_map([k for k in state if is_inference_key(k)], hf_rules())
    if unmapped:
        raise AssertionError(f"inference parameters without a Hugging Face name: {unmapped}")
    return {theirs: state[ours].detach().clone().contiguous() for ours, theirs in mapping.items()}


def build_hf_model(model: Data2VecAQC):
    """A ``transformers.Data2VecAudioModel`` holding ``model``'s inference encoder (eval mode).

    Loads strictly: every Hugging Face parameter is filled from aqc, none is left at its init.
    """
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    hf_model = Data2VecAudioModel(Data2VecAudioConfig(**hf_config_kwargs(model.config)))
    hf_model.load_state_dict(hf_state_dict(model), strict=True)
    return hf_model.eval()


def export_hf(model: Data2VecAQC, output_dir: PathLike) -> Path:
    """Write ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` (16 kHz, normalised
    input, attention masks) and ``aqc_config.json`` into ``output_dir``."""
    from transformers import Wav2Vec2FeatureExtractor

    output_dir = Path(output_dir)
    hf_model = build_hf_model(model)
    hf_model.save_pretrained(output_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(output_dir)
    with open(output_dir / AQC_CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump({"config": model.config.to_dict(), "num_updates": int(model.num_updates)}, f, indent=2)
    return output_dir


# -------------------------------------------------------------------------------------- load back
def config_from_hf(hf: Dict[str, Any]) -> Data2VecAQCConfig:
    """An aqc config (without quantizer) from a Data2VecAudio ``config.json``."""
    if hf.get("model_type") != MODEL_TYPE:
        raise HFExportError(f"config.json: model_type {hf.get('model_type')!r}, expected {MODEL_TYPE!r}")
    for key, wanted in (("feat_extract_activation", "gelu"), ("hidden_act", "gelu"), ("add_adapter", False)):
        if hf.get(key, wanted) != wanted:
            raise HFExportError(f"config.json: {key}={hf.get(key)!r} is not supported (aqc needs {wanted!r})")
    if abs(float(hf.get("layer_norm_eps", LAYER_NORM_EPS)) - LAYER_NORM_EPS) > 1e-12:
        raise HFExportError(f"config.json: layer_norm_eps={hf['layer_norm_eps']} (aqc's LayerNorms use 1e-5)")
    num_layers = int(hf.get("num_hidden_layers", 12))
    conv = list(zip(hf.get("conv_dim", [512] * 7), hf.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2]),
                    hf.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])))
    return Data2VecAQCConfig(
        conv_layers=conv, extractor_mode="layer_norm", conv_bias=bool(hf.get("conv_bias", False)),
        embed_dim=int(hf.get("hidden_size", 768)), ffn_dim=int(hf.get("intermediate_size", 3072)),
        num_layers=num_layers, num_heads=int(hf.get("num_attention_heads", 12)),
        dropout=float(hf.get("hidden_dropout", 0.1)), attention_dropout=float(hf.get("attention_dropout", 0.1)),
        activation_dropout=float(hf.get("activation_dropout", 0.1)),
        encoder_dropout_input=float(hf.get("feat_proj_dropout", 0.0)), layerdrop=float(hf.get("layerdrop", 0.1)),
        pos_conv_kernel=int(hf.get("conv_pos_kernel_size", 19)),
        pos_conv_depth=int(hf.get("num_conv_pos_embeddings", 5)),
        pos_conv_groups=int(hf.get("num_conv_pos_embedding_groups", 16)),
        top_k_layers=min(8, num_layers), use_quantizer=False, use_clustering=False)


def _read_hf_weights(folder: Path) -> Dict[str, Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        return read_checkpoint(folder / "pytorch_model.bin")
    raise HFExportError(f"{folder}: no model.safetensors or pytorch_model.bin (sharded checkpoints are not supported)")


def load_hf_dir(folder: PathLike, pos_conv_mask_padding: bool = True) -> Tuple[Data2VecAQC, List[str]]:
    """An aqc model from a Hugging Face Data2VecAudio folder (ours or another one, e.g. a
    ``Data2VecAudioForCTC`` whose head is dropped). Returns the model and notes.

    The model has no quantizer; its teacher starts as a copy of the student and ``final_proj`` is
    freshly initialised (neither is in a Hugging Face folder).
    """
    folder = Path(folder)
    with open(folder / "config.json", encoding="utf-8") as f:
        hf = json.load(f)
    notes: List[str] = []
    exact: Optional[Dict[str, Any]] = None
    if (folder / AQC_CONFIG_FILE).is_file():
        with open(folder / AQC_CONFIG_FILE, encoding="utf-8") as f:
            exact = json.load(f)
    if exact is not None:
        options = dict(exact["config"], use_quantizer=False, use_clustering=False)
        config = Data2VecAQCConfig.from_dict(options)
    else:
        config = config_from_hf(hf)
    config.pos_conv_mask_padding = pos_conv_mask_padding
    weights = _read_hf_weights(folder)
    prefix = "data2vec_audio."  # task models (ForCTC, ...) nest the base model under this name
    if any(k.startswith(prefix) for k in weights):
        dropped = sorted(k for k in weights if not k.startswith(prefix))
        if dropped:
            notes.append(f"dropped task-head tensors: {', '.join(dropped)}")
        weights = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}

    model = Data2VecAQC(config)
    target = model.state_dict()
    mapping, _ = build_key_map([k for k in target if is_inference_key(k)], hf_rules())
    missing = [ours for ours, theirs in mapping.items() if theirs not in weights]
    if missing == ["mask_emb"]:
        notes.append("no masked_spec_embed in the folder (mask_time_prob=0): mask_emb freshly initialised")
    elif missing:
        raise HFExportError(f"{folder}: weights missing for {len(missing)} parameter(s), e.g. {mapping[missing[0]]}")
    for ours, theirs in mapping.items():
        if theirs in weights:
            if tuple(weights[theirs].shape) != tuple(target[ours].shape):
                raise HFExportError(f"{theirs}: shape {tuple(weights[theirs].shape)} does not fit config.json")
            target[ours] = weights[theirs].to(target[ours].dtype)
    unused = sorted(set(weights) - set(mapping.values()))
    if unused:
        notes.append(f"unused tensors: {', '.join(unused)}")
    model.load_state_dict(target)
    model.teacher.encoder.load_state_dict(model.encoder.state_dict())
    if exact is not None:
        model.set_num_updates(int(exact.get("num_updates", 0)))
    return model, notes
