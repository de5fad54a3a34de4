"""Downstream probes: how well each layer of a frozen model separates the labels of a small labelled set.

A probe fits a light model on the train part of a labelled set and scores the dev part, once per hidden
state (0 = the encoder input, i = transformer layer i), so a user sees during pre-training (or of any
released model) whether the representation is getting better, and which layer carries the information.

Two kinds, chosen by ``task`` (``auto``: ``classify`` when every train transcript is one word):

* ``classify`` (single-word corpora, e.g. spoken digits): each utterance's features averaged over three
  equal spans of time and concatenated (coarse order survives), standardised with the train statistics,
  and a multinomial logistic regression with an L2 penalty fitted by L-BFGS. Score: the label error rate
  on dev (a dev label never seen in train counts as an error). Chance: always answering the most frequent
  train label.
* ``ctc`` (sentences): a linear CTC head on the standardised frame features, characters with a word
  boundary token, Adam for ``ctc_steps`` mini-batches, greedy decoding. Score: the character error rate on
  dev, characters without spaces as in :mod:`aqc.scoring`. Chance: 1.0 (an empty output).

Features come from the student with no masking, in eval mode, one utterance at a time (so they never depend
on padding). The model's training mode and every random stream are restored afterwards: a probe inside a
training run changes neither the weights nor the run's randomness. Audio is read once, when the probe is
built: a set larger than ``max_utterances`` or ``max_seconds`` is cut to a seeded random subset, and the
log says so.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from aqc.models import Data2VecAQC

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
TASKS = ("auto", "classify", "ctc")
SPACE = "|"


@dataclass
class ProbeConfig:
    """Options of a probe (``probe_conf`` in a pre-training config, flags of ``aqc.bin.probe``)."""

    task: str = "auto"
    """classify | ctc | auto (classify when every train transcript is a single word)"""
    every_epochs: int = 1
    """in a training run: probe after every N-th epoch (and the last)"""
    max_utterances: int = 1000
    """per set: a larger set is cut to a seeded random subset"""
    max_seconds: float = 1200.0
    """per set: audio beyond this many seconds is left out (seeded random subset)"""
    l2: float = 1e-3
    """classify: L2 penalty on the logistic regression's weights"""
    ctc_steps: int = 300
    """ctc: Adam steps of the linear CTC head (each one mini-batch)"""
    ctc_batch_size: int = 16
    """ctc: utterances per mini-batch"""
    ctc_lr: float = 2e-3
    """ctc: Adam learning rate"""
    seed: int = 0
    """subset choice and CTC mini-batch order"""

    @classmethod
    def from_dict(cls, conf: Optional[Dict]) -> "ProbeConfig":
        conf = dict(conf or {})
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(conf) - set(names))
        if unknown:
            raise ValueError(f"probe_conf: unknown option(s) {', '.join(unknown)}; known: {', '.join(names)}")
        for key, value in conf.items():
            kind = type(getattr(cls, key))
            try:
                conf[key] = kind(value) if kind is not bool else value
            except (TypeError, ValueError):
                raise ValueError(f"probe_conf.{key}: expected {kind.__name__}, got {value!r}") from None
        config = cls(**conf)
        if config.task not in TASKS:
            raise ValueError(f"probe_conf.task {config.task!r}: expected one of {', '.join(TASKS)}")
        if config.every_epochs < 1 or config.max_utterances < 1 or config.max_seconds <= 0 or config.ctc_steps < 1:
            raise ValueError("probe_conf: every_epochs, max_utterances, ctc_steps must be >= 1 and max_seconds > 0")
        return config


# ------------------------------------------------------------------------------------------- data
@dataclass
class LabelledSet:
    """Audio (16 kHz, normalised like pre-training) and transcripts of one data directory."""

    name: str
    keys: List[str]
    waveforms: List[Tensor]
    texts: List[str]
    left_out: int = 0  # utterances beyond max_utterances / max_seconds

    @property
    def seconds(self) -> float:
        return sum(w.numel() for w in self.waveforms) / 16000.0


def _durations(data_dir: Path, pairs: Sequence[Tuple[str, str]]) -> Dict[str, float]:
    """Seconds per utterance: ``utt2num_samples`` (stage 3's dump dirs, 16 kHz) where present, else headers."""
    table = data_dir / "utt2num_samples"
    if table.is_file():
        out = {}
        with open(table, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 2:
                    out[fields[0]] = int(fields[1]) / 16000.0
        if all(k in out for k, _ in pairs):
            return out
    import soundfile as sf

    out = {}
    for key, path in pairs:
        try:
            info = sf.info(path)
        except Exception as e:  # noqa: BLE001 - soundfile raises several types
            raise ValueError(f"{data_dir}/wav.scp: {key}: cannot read {path} ({e}). Fix: check the file, or "
                             "remove the utterance (utils/fix_data_dir.py)") from None
        out[key] = info.frames / float(info.samplerate)
    return out


def labelled_dir_problem(data_dir: PathLike) -> Optional[str]:
    """What a labelled Kaldi-style dir lacks for the probe (``<dir>: <file> not found ...``), or None."""
    for file in ("wav.scp", "text"):
        if not (Path(data_dir) / file).is_file():
            return (f"{data_dir}: {file} not found. The probe needs a labelled Kaldi-style directory (wav.scp and "
                    "text), e.g. a recipe's dump/<finetune_set>")
    return None


def read_labelled_dir(data_dir: PathLike, max_utterances: int = 1000, max_seconds: float = 1200.0,
                      seed: int = 0, name: Optional[str] = None) -> LabelledSet:
    """A Kaldi-style directory with ``wav.scp`` (audio files; no pipes) and ``text``.

    Every utterance of ``wav.scp`` needs a transcript. A set larger than the limits is cut to a seeded
    random subset (``left_out`` says how many were left out; the caller logs it)."""
    from aqc.api import load_waveform
    from aqc.augment.audio_list import read_scp
    from aqc.scoring import read_text_file

    data_dir = Path(data_dir)
    name = name or data_dir.name
    problem = labelled_dir_problem(data_dir)
    if problem:
        raise FileNotFoundError(f"probe data {problem}")
    pairs = read_scp(str(data_dir / "wav.scp"))
    texts = read_text_file(data_dir / "text")
    missing = [k for k, _ in pairs if k not in texts]
    if missing:
        raise ValueError(f"{data_dir}/text: no transcript for {len(missing)} utterance(s) of wav.scp (first: "
                         f"{missing[0]}). Fix: utils/fix_data_dir.py {data_dir}")
    piped = [k for k, p in pairs if p.rstrip().endswith("|")]
    if piped:
        raise ValueError(f"{data_dir}/wav.scp: {piped[0]} is a command, not a file; the probe reads audio files. Fix: "
                         "use the formatted directory (recipe stage 3: dump/<set>, utils/format_wav_scp.py)")
    if not pairs:
        raise ValueError(f"{data_dir}/wav.scp lists no utterance")
    seconds = _durations(data_dir, pairs)
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(pairs), generator=generator).tolist()
    chosen, total = [], 0.0
    for index in order:
        if len(chosen) >= max_utterances:
            break
        key = pairs[index][0]
        if chosen and total + seconds[key] > max_seconds:
            continue
        chosen.append(index)
        total += seconds[key]
    chosen.sort()
    waveforms = []
    for index in chosen:
        key, path = pairs[index]
        try:
            waveforms.append(load_waveform(path))
        except (OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"{data_dir}/wav.scp: {key}: cannot use {path} ({e}). Fix: replace the file, or remove "
                             f"the utterance (utils/fix_data_dir.py {data_dir})") from None
    return LabelledSet(name, [pairs[i][0] for i in chosen], waveforms, [texts[pairs[i][0]] for i in chosen],
                       left_out=len(pairs) - len(chosen))


# --------------------------------------------------------------------------------------- features
@torch.no_grad()
def layer_features(model: Data2VecAQC, waveforms: Sequence[Tensor], batch_seconds: float = 30.0) -> List[Tensor]:
    """One (num_layers + 1, frames, embed_dim) float32 tensor per waveform, on the model's device.

    A waveform shorter than the model's receptive field is padded with zeros to one frame. With the
    ``layer_norm`` CNN, utterances of similar length run together (about ``batch_seconds`` of audio per
    batch): the model's padding masks make a padded utterance's features those it has alone. With the
    ``group_norm`` CNN (its normalisation spans the padding) each utterance runs alone."""
    device = next(model.parameters()).device
    waves = [F.pad(w, (0, model.receptive_field - w.numel())) if w.numel() < model.receptive_field else w
             for w in waveforms]
    batch_samples = batch_seconds * 16000 if model.config.extractor_mode == "layer_norm" else 0
    order = sorted(range(len(waves)), key=lambda i: waves[i].numel())
    batches: List[List[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * waves[index].numel() <= batch_samples:
            batches[-1].append(index)
        else:
            batches.append([index])
    was_training = model.training
    model.eval()
    out: List[Optional[Tensor]] = [None] * len(waves)
    try:
        for batch in batches:
            lengths = torch.tensor([waves[i].numel() for i in batch], device=device)
            padded = torch.nn.utils.rnn.pad_sequence([waves[i] for i in batch], batch_first=True).to(device)
            states, frames = model.extract_features(padded, lengths if len(batch) > 1 else None)
            stacked = torch.stack(states, dim=1).float()  # (B, L, T, D)
            for row, index in enumerate(batch):
                out[index] = stacked[row, :, : int(frames[row])]
        return out
    finally:
        model.train(was_training)


def pool_thirds(feats: Tensor) -> Tensor:
    """(L, T, D) -> (L, 3 D): the mean over each third of the frames (a frame is shared when T < 3)."""
    frames = feats.shape[1]
    bounds = [(math.floor(i * frames / 3), max(math.ceil((i + 1) * frames / 3), math.floor(i * frames / 3) + 1))
              for i in range(3)]
    return torch.cat([feats[:, min(a, frames - 1):min(b, frames)].mean(dim=1) for a, b in bounds], dim=-1)


def _standardise(train: Tensor, *others: Tensor, dim: int) -> Tuple[Tensor, ...]:
    mean = train.mean(dim=dim, keepdim=True)
    std = train.std(dim=dim, keepdim=True).clamp_min(1e-5)
    return tuple((x - mean) / std for x in (train, *others))


# ---------------------------------------------------------------------------------------- probes
@dataclass
class ProbeResult:
    task: str
    metric: str
    layer_errors: List[float]
    best_layer: int
    best_error: float
    chance: float
    train_utterances: int
    dev_utterances: int
    seconds: float
    num_updates: int = 0
    dev_units: int = 0  # what the error rate counts: dev utterances (classify), reference characters (ctc)

    @property
    def standard_error(self) -> float:
        """Binomial standard error of the best error rate over ``dev_units`` (a lower bound for ctc,
        whose characters are not independent)."""
        return standard_error(self.best_error, self.dev_units or self.dev_utterances)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        layers = " ".join(f"{e:.3f}" for e in self.layer_errors)
        return (f"{self.metric} {self.best_error:.3f} +- {self.standard_error:.3f} at layer {self.best_layer} "
                f"(chance {self.chance:.3f}; "
                f"layers 0..{len(self.layer_errors) - 1}: {layers}); {self.seconds:.1f} s")


def standard_error(rate: float, units: int) -> float:
    return math.sqrt(max(rate * (1.0 - rate), 0.0) / max(int(units), 1))


def fit_classifier(train_x: Tensor, train_y: Tensor, num_classes: int, l2: float = 1e-3,
                   max_iter: int = 100) -> Tuple[Tensor, Tensor]:
    """Multinomial logistic regressions, one per layer, fitted together: train_x (L, N, F), train_y (N,).
    Returns weights (L, F, C) and biases (L, 1, C)."""
    layers, _, dim = train_x.shape
    weight = torch.zeros(layers, dim, num_classes, device=train_x.device, requires_grad=True)
    bias = torch.zeros(layers, 1, num_classes, device=train_x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    targets = train_y.repeat(layers)

    def closure():
        optimizer.zero_grad()
        logits = torch.baddbmm(bias, train_x, weight)  # (L, N, C)
        loss = F.cross_entropy(logits.reshape(-1, num_classes), targets, reduction="sum") / train_y.numel()
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def classify_errors(train_x: Tensor, train_labels: Sequence[str], dev_x: Tensor, dev_labels: Sequence[str],
                    l2: float = 1e-3) -> Tuple[List[float], float]:
    """Per-layer label error rate on dev of classifiers fitted on train; and the error of the majority
    answer. train_x (L, N, F), dev_x (L, M, F), standardised by the caller."""
    classes = sorted(set(train_labels))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[c] for c in train_labels], device=train_x.device)
    weight, bias = fit_classifier(train_x, y, len(classes), l2)
    predictions = torch.baddbmm(bias, dev_x, weight).argmax(dim=-1)  # (L, M)
    dev_y = torch.tensor([index.get(c, -1) for c in dev_labels], device=dev_x.device)
    errors = (predictions != dev_y[None]).float().mean(dim=1)
    majority = max(classes, key=lambda c: (list(train_labels).count(c), c))
    chance = sum(label != majority for label in dev_labels) / len(dev_labels)
    return [float(e) for e in errors], float(chance)


def _tokens(text: str) -> List[str]:
    return list(SPACE.join(text.split()))


def _greedy(logits: Tensor, length: int, inventory: Sequence[str]) -> str:
    best = logits[:length].argmax(dim=-1).tolist()
    out, previous = [], 0
    for token in best:
        if token != previous and token != 0:
            out.append(inventory[token])
        previous = token
    return "".join(out).replace(SPACE, " ")


def ctc_errors(train_feats: Sequence[Tensor], train_texts: Sequence[str], dev_feats: Sequence[Tensor],
               dev_texts: Sequence[str], config: ProbeConfig) -> List[float]:
    """Per-layer character error rate on dev of linear CTC heads fitted on train, one head per layer, all
    trained together (each on its own layer: the summed loss keeps them independent). feats: (L, T, D) per
    utterance; each layer is standardised with its train statistics here."""
    from aqc.scoring import chars, edit_distance

    inventory = ["<blank>"] + sorted({t for text in train_texts for t in _tokens(text)})
    index = {t: i for i, t in enumerate(inventory)}
    device = train_feats[0].device
    layers, _, dim = train_feats[0].shape
    frames = torch.cat([f for f in train_feats], dim=1)  # (L, all frames, D)
    mean, std = frames.mean(dim=1, keepdim=True), frames.std(dim=1, keepdim=True).clamp_min(1e-5)
    del frames
    generator = torch.Generator().manual_seed(config.seed)  # initialisation and batch order: reproducible
    weight = torch.nn.Parameter((torch.randn(layers, dim, len(inventory), generator=generator) / math.sqrt(dim))
                                .to(device))
    bias = torch.nn.Parameter(torch.zeros(layers, 1, 1, len(inventory), device=device))
    optimizer = torch.optim.Adam([weight, bias], lr=config.ctc_lr)
    targets = [torch.tensor([index[t] for t in _tokens(text)], dtype=torch.long) for text in train_texts]
    usable = [i for i, t in enumerate(targets) if len(t) > 0]

    def logits(feats: List[Tensor]) -> Tensor:  # (L, T, D) each -> (L, B, T, V)
        x = torch.nn.utils.rnn.pad_sequence([f.transpose(0, 1) for f in feats], batch_first=True)  # (B, T, L, D)
        x = (x.permute(2, 0, 1, 3) - mean[:, :, None]) / std[:, :, None]
        return torch.einsum("lbtd,ldv->lbtv", x, weight) + bias

    with torch.enable_grad():
        for _ in range(config.ctc_steps):
            batch = [usable[i] for i in torch.randperm(len(usable), generator=generator)[:config.ctc_batch_size]]
            out = logits([train_feats[i] for i in batch]).log_softmax(dim=-1)  # (L, B, T, V)
            log_probs = out.reshape(layers * len(batch), out.shape[2], -1).transpose(0, 1)  # (T, L B, V)
            lengths = torch.tensor([train_feats[i].shape[1] for i in batch]).repeat(layers)
            y = torch.cat([targets[i] for i in batch]).repeat(layers).to(device)
            y_lengths = torch.tensor([len(targets[i]) for i in batch]).repeat(layers)
            loss = layers * F.ctc_loss(log_probs, y, lengths, y_lengths, zero_infinity=True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    errors = [0] * layers
    reference = 0
    with torch.no_grad():
        for feats, text in zip(dev_feats, dev_texts):
            out = logits([feats])[:, 0]  # (L, T, V)
            for layer in range(layers):
                errors[layer] += edit_distance(chars(text), chars(_greedy(out[layer], feats.shape[1], inventory)))
            reference += len(chars(text))
    return [e / max(reference, 1) for e in errors]


def resolve_task(task: str, texts: Sequence[str]) -> str:
    if task != "auto":
        return task
    return "classify" if all(len(t.split()) == 1 for t in texts) else "ctc"


class Probe:
    """A probe on a fixed labelled train/dev pair; call it with a model to score each layer."""

    def __init__(self, train: LabelledSet, dev: LabelledSet, config: Optional[ProbeConfig] = None):
        self.config = config or ProbeConfig()
        if not train.keys or not dev.keys:
            raise ValueError(f"probe: the train set ({train.name}, {len(train.keys)} utterances) and the dev set "
                             f"({dev.name}, {len(dev.keys)}) must both hold utterances")
        self.train, self.dev = train, dev
        self.task = resolve_task(self.config.task, train.texts)
        if self.task == "classify" and len(set(train.texts)) < 2:
            raise ValueError(f"probe: the train set {train.name} has one label only; a classifier needs two or more")

    @classmethod
    def from_dirs(cls, train_dir: PathLike, dev_dir: PathLike, config: Optional[ProbeConfig] = None) -> "Probe":
        config = config or ProbeConfig()
        sets = []
        for path in (train_dir, dev_dir):
            labelled = read_labelled_dir(path, config.max_utterances, config.max_seconds, config.seed)
            if labelled.left_out:
                logger.info(f"probe: {path}: {len(labelled.keys)} utterances ({labelled.seconds:.0f} s) used, "
                            f"{labelled.left_out} left out (probe_conf max_utterances {config.max_utterances}, "
                            f"max_seconds {config.max_seconds:g})")
            sets.append(labelled)
        return cls(*sets, config=config)

    @property
    def metric(self) -> str:
        return "label error rate" if self.task == "classify" else "character error rate"

    def __call__(self, model: Data2VecAQC) -> ProbeResult:
        start = time.perf_counter()
        devices = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else []
        with torch.random.fork_rng(devices=devices):
            train_feats = layer_features(model, self.train.waveforms)
            dev_feats = layer_features(model, self.dev.waveforms)
            if self.task == "classify":
                train_x = torch.stack([pool_thirds(f) for f in train_feats], dim=1)  # (L, N, 3D)
                dev_x = torch.stack([pool_thirds(f) for f in dev_feats], dim=1)
                train_x, dev_x = _standardise(train_x, dev_x, dim=1)
                errors, chance = classify_errors(train_x, self.train.texts, dev_x, self.dev.texts, self.config.l2)
            else:
                errors = ctc_errors(train_feats, self.train.texts, dev_feats, self.dev.texts, self.config)
                chance = 1.0
        best = min(range(len(errors)), key=lambda i: (errors[i], i))
        from aqc.scoring import chars

        units = len(self.dev.keys) if self.task == "classify" else sum(len(chars(t)) for t in self.dev.texts)
        return ProbeResult(self.task, self.metric, errors, best, errors[best], chance, len(self.train.keys),
                           len(self.dev.keys), time.perf_counter() - start, int(model.num_updates), units)
