"""A small Python API: load any aqc-readable model and extract per-layer features from audio.

    from aqc.api import load_model, extract_features
    model = load_model("exp/ssl_tiny/valid.loss.best.pth")     # or an aqc model file, HF folder, fairseq .pt
    feats = extract_features(model, ["a.flac", "b.wav"], layers=[-1])
    feats[0].shape  # (1, frames, embed_dim)

Audio is read with soundfile, down-mixed to mono, resampled to 16 kHz and normalised to zero mean and
unit variance like the pre-training views (:func:`aqc.augment.normalize`). Utterances run one at a
time, so the features never depend on padding.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from aqc.models import Data2VecAQC

SAMPLE_RATE = 16000
PathLike = Union[str, os.PathLike]
AudioInput = Union[PathLike, Tensor, np.ndarray]


# ------------------------------------------------------------------------------------------ models
def load_model(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> Data2VecAQC:
    """Load a model in eval mode from any of:

    * an aqc model file or an ESPnet aqc SSL checkpoint (``*.pth`` with ``config.yaml`` beside it);
    * a Hugging Face Data2VecAudio folder (``config.json`` + weights), e.g. one made by
      ``python -m aqc.bin.export --to hf``;
    * a fairseq data2vec / data2vec-aqc checkpoint or an s3prl data2vec checkpoint (imported on the fly);
    * a pre-trained model packed by ``aqc.bin.pack`` (``.zip``).
    """
    from aqc.checkpoints import UnsafeCheckpointError, load_checkpoint
    from aqc.interop import load_hf_dir, read_checkpoint
    from aqc.interop.fairseq import import_fairseq_state
    from aqc.models.io import is_aqc_checkpoint, model_from_checkpoint

    path = Path(path)
    if path.suffix == ".zip":  # an archive of aqc.bin.pack
        from aqc.packing import unpack

        files = unpack(path)
        if files["kind"] != "ssl":
            raise ValueError(f"{path} packs a fine-tuned recogniser: decode it with aqc.bin.asr_inference "
                             "--model_archive")
        path = files["model_file"]
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder without config.json (not a Hugging Face model folder)")
        model, _ = load_hf_dir(path)
    else:
        try:
            obj = load_checkpoint(path)  # weights_only: aqc and ESPnet files, plain fairseq/s3prl ones
        except UnsafeCheckpointError as refusal:
            # fairseq pickles configuration objects: the restricted reader keeps them as inert data. An aqc
            # or ESPnet file never holds any, so one that does stays refused.
            obj = read_checkpoint(path)
            if is_aqc_checkpoint(obj) or not _is_fairseq_like(obj):
                raise refusal
        if is_aqc_checkpoint(obj):
            model = model_from_checkpoint(obj, path)
        elif _is_fairseq_like(obj):
            model, _ = import_fairseq_state(obj)
        else:
            raise ValueError(f"{path}: not an aqc model file, ESPnet aqc checkpoint, fairseq or s3prl checkpoint")
    return model.to(map_location).eval()


def _is_fairseq_like(obj) -> bool:
    return isinstance(obj, dict) and ("model_weight" in obj or "model" in obj)


# ------------------------------------------------------------------------------------------- audio
def _resample(wav: Tensor, sample_rate: int) -> Tensor:
    if sample_rate == SAMPLE_RATE:
        return wav
    try:
        import torchaudio.functional as AF

        return AF.resample(wav, sample_rate, SAMPLE_RATE)
    except ImportError:  # torchaudio is optional here; scipy's polyphase filter does the same job
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(sample_rate, SAMPLE_RATE)
        out = resample_poly(wav.numpy(), SAMPLE_RATE // g, sample_rate // g)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def load_waveform(audio: AudioInput, sample_rate: Optional[int] = None) -> Tensor:
    """A 1-D float32 16 kHz waveform, mono, normalised like pre-training.

    ``audio``: a file path (soundfile reads it; its own rate is used), or an array/tensor of shape
    (samples,) or (channels, samples) at ``sample_rate`` (default 16 kHz).
    """
    from aqc.augment import normalize

    if isinstance(audio, (str, os.PathLike)):
        import soundfile as sf

        if not os.path.isfile(audio):  # soundfile would say "System error"
            raise FileNotFoundError(f"audio file not found: {audio}")
        data, rate = sf.read(str(audio), dtype="float32", always_2d=True)  # (frames, channels)
        wav = torch.from_numpy(data.mean(axis=1))
    else:
        rate = SAMPLE_RATE if sample_rate is None else int(sample_rate)
        wav = torch.as_tensor(np.asarray(audio) if not isinstance(audio, Tensor) else audio).float()
        if wav.dim() == 2:
            wav = wav.mean(dim=0)
        elif wav.dim() != 1:
            raise ValueError(f"a waveform must be (samples,) or (channels, samples), got {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise ValueError("empty waveform")
    wav = _resample(wav.contiguous(), int(rate))
    return torch.from_numpy(normalize(wav.numpy().astype(np.float32)))


# ---------------------------------------------------------------------------------------- features
def _layer_indices(layers: Optional[Sequence[int]], num_states: int) -> List[int]:
    if layers is None:
        return list(range(num_states))
    out = []
    for layer in layers:
        index = layer + num_states if layer < 0 else layer
        if not 0 <= index < num_states:
            raise ValueError(f"layer {layer} out of range: the model has {num_states} hidden states "
                             f"(0 = encoder input, 1..{num_states - 1} = transformer layers)")
        out.append(index)
    return out


@torch.no_grad()
def extract_features(model: Data2VecAQC, audio: Union[AudioInput, Sequence[AudioInput]],
                     layers: Optional[Sequence[int]] = None, sample_rate: Optional[int] = None) -> List[Tensor]:
    """Per-layer features of each utterance.

    ``audio``: one input or a list of them (paths, or waveforms at ``sample_rate``). ``layers``: indices
    into the ``num_layers + 1`` hidden states (0 = the encoder input after the positional conv and
    LayerNorm, i = transformer layer i, negative from the end); default all of them.
    Returns one tensor (len(layers), frames, embed_dim) per utterance, on the CPU.
    """
    items = list(audio) if isinstance(audio, (list, tuple)) else [audio]
    indices = _layer_indices(layers, model.config.num_layers + 1)
    deepest = max(indices)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for item in items:
            wav = load_waveform(item, sample_rate)
            if wav.numel() < model.receptive_field:
                raise ValueError(f"an utterance of {wav.numel()} samples at 16 kHz is shorter than the model's "
                                 f"receptive field ({model.receptive_field} samples)")
            states, _ = model.extract_features(wav[None].to(device), num_layers=deepest)
            out.append(torch.stack([states[i][0] for i in indices]).float().cpu())
        return out
    finally:
        model.train(was_training)
