"""A Hugging Face model card (README.md with the hub's metadata block) for an exported aqc upstream.

The metadata block holds the licence, language, datasets, tags and, when a recipe's RESULTS.md has
fine-tuned systems pre-trained from this model, a ``model-index`` with their word error rates; the text
says how the model was pre-trained (read from its own configuration) and how to load it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

from aqc.models import Data2VecAQC


def pretraining_method(model: Data2VecAQC) -> str:
    """The method, read from the model's own options (the augmentation is not stored with a model)."""
    c = model.config
    parts = []
    if c.use_quantizer:
        parts.append("cross-contrastive loss against Gumbel-quantized codes")
    if c.use_clustering:
        parts.append("k-means clustering of the negatives")
    name = "data2vec-aqc" if c.use_quantizer and c.use_clustering else "data2vec" if not c.use_quantizer else \
        "data2vec + augmentation + quantizer (no clustering)"
    return name + (f" ({'; '.join(parts)})" if parts else " (EMA-teacher regression only)")


def results_for(results_md: Path, ssl_exp_name: str) -> List[Dict[str, object]]:
    """Rows (system, test set, WER, CER) of RESULTS.md whose system was pre-trained in ``ssl_exp_name``."""
    text = results_md.read_text(encoding="utf-8")
    systems = {line.split("|")[1].strip() for line in text.splitlines()
               if line.startswith("| ") and f"`{ssl_exp_name}`" in line}
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) < 3 or "/" not in cells[0]:
            continue
        system = cells[0].split("/")[0]
        if system in systems and re.fullmatch(r"[0-9.]+", cells[1]):
            rows.append({"system": system, "test_set": cells[0], "wer": float(cells[1]), "cer": float(cells[2])})
    return rows


def write_model_card(out_dir: Path, model: Data2VecAQC, name: str, license: str, language: Sequence[str],
                     datasets: Sequence[str], results: Optional[List[Dict[str, object]]] = None) -> Path:
    c = model.config
    meta: Dict[str, object] = {
        "license": license, "language": list(language), "datasets": list(datasets),
        "library_name": "transformers", "pipeline_tag": "feature-extraction",
        "tags": ["audio", "speech", "self-supervised-learning", "data2vec", "data2vec-aqc", "aqc"],
    }
    if results:
        meta["metrics"] = ["wer"]
        meta["model-index"] = [{"name": name, "results": [
            {"task": {"type": "automatic-speech-recognition", "name": "Automatic Speech Recognition"},
             "dataset": {"name": r["test_set"], "type": (list(datasets) or ["custom"])[0]},
             "metrics": [{"type": "wer", "value": r["wer"], "name": f"WER (CTC fine-tuning: {r['system']})"}]}
            for r in results]}]
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {name}", "",
             f"A speech encoder pre-trained without labels with **{pretraining_method(model)}**, exported by "
             "[aqc](https://github.com/) (data2vec-aqc, Lodagala, Ghosh, Umesh, ICASSP 2023) to a Hugging Face "
             "`Data2VecAudioModel` (the encoder only: no quantizer, no CTC head).", "",
             f"Size: {c.num_layers} transformer layers of {c.embed_dim} dimensions, {c.num_heads} heads, "
             f"{len(c.conv_layers)} convolutional layers; 16 kHz input, normalised to zero mean and unit variance.",
             "", "## How to load", "", "```python", "import torch, soundfile",
             "from transformers import Data2VecAudioModel", f'model = Data2VecAudioModel.from_pretrained("{name}").eval()',
             'wav, rate = soundfile.read("speech.wav", dtype="float32")  # 16 kHz mono',
             "wav = (wav - wav.mean()) / (wav.std() + 1e-5)",
             "with torch.no_grad():",
             "    states = model(torch.from_numpy(wav)[None], output_hidden_states=True).hidden_states", "```", "",
             "In aqc: `aqc.api.load_model(folder)`; in ESPnet: `frontend: aqc` with `frontend_conf.model_file` "
             "set to this folder (see the aqc README).", ""]
    if results:
        lines += ["## Results of CTC fine-tuning from this model (from the recipe's RESULTS.md)", "",
                  "| system / test set | WER | CER |", "|---|---:|---:|"]
        lines += [f"| {r['test_set']} | {r['wer']:.2f} | {r['cer']:.2f} |" for r in results]
        lines.append("")
    path = Path(out_dir) / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
