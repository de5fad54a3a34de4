#!/usr/bin/env python3
"""Helpers of ``bench/gpu_check.sh`` (one subcommand each; the shell script does the running and timing).

    python bench/gpu_check_util.py env                      # torch / CUDA / GPU / ESPnet AMP dtype, as JSON
    python bench/gpu_check_util.py make_data DIR --train 64 --valid 4 --min_seconds 8 --max_seconds 15
    python bench/gpu_check_util.py cuda_tests tests         # pytest node ids of the tests that look at CUDA
    python bench/gpu_check_util.py run_figures EXP_DIR      # updates, audio processed, train time, as JSON

``make_data`` writes ``DIR/{train,dev}/wav.scp`` and ``speech_shape`` (``<utt> <samples>``) over 16 kHz
speech-like waveforms: a glottal-pulse-like harmonic source on a wandering pitch contour, shaped by moving
formant resonances, syllable-rate amplitude envelopes with pauses, and noise bursts (fricatives).

``run_figures`` reads what an ESPnet run leaves in its output directory: ``config.yaml`` (the options it ran
with) and ``checkpoint.pth`` (its reporter statistics and the model's update counter). The audio processed
is exact, not estimated: the mini-batches of epoch 1 are rebuilt with ESPnet's own batch sampler and
iterator factory from the run's options and shape file, and each counts as the collate crops it
(``pad: false``: every row to the batch's shortest utterance and to ``max_sample_size``).
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from pathlib import Path
from typing import Dict, List

SAMPLE_RATE = 16000


# ------------------------------------------------------------------------------------------- env
def cmd_env(args) -> int:
    import torch

    info = {"torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    memory_gib=round(props.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
    if args.espnet:
        # ESPnet decides the autocast dtype once, when its trainer module is imported: bf16 where
        # torch.cuda.is_bf16_supported(), else fp16. There is no option to choose it (see gpu_check.sh).
        from espnet2.train import trainer

        info["espnet_amp_dtype"] = str(trainer.autocast_args.get("dtype", "float16 (autocast default)"))
    print(json.dumps(info))
    return 0 if (info["cuda_available"] or not args.require_cuda) else 1


# ------------------------------------------------------------------------------------------ data
def speech_like(seconds: float, rng) -> "np.ndarray":  # noqa: F821
    """One speech-like waveform (float32, 16 kHz, peak about 0.5)."""
    import numpy as np
    from scipy.signal import lfilter

    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    # pitch: a speaker's base F0 with slow drift and per-syllable movements
    f0 = rng.uniform(90, 240) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
                                 + 0.08 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    source = np.zeros(n)
    for k in range(1, 40):  # harmonics below 6.4 kHz, falling at -6 dB/octave
        source += np.where(k * f0 < 0.4 * SAMPLE_RATE, np.sin(k * phase) / k, 0.0)
    # vowel-like formants: three resonances whose centre moves every ~120 ms (block-wise filtering)
    voiced = np.zeros(n)
    block = int(0.12 * SAMPLE_RATE)
    zi = None
    for start in range(0, n, block):
        seg = source[start:start + block]
        formants = (rng.uniform(300, 900), rng.uniform(900, 2300), rng.uniform(2300, 3300))
        a = np.array([1.0])
        for f in formants:
            r = np.exp(-np.pi * 120 / SAMPLE_RATE)
            a = np.convolve(a, [1.0, -2 * r * np.cos(2 * np.pi * f / SAMPLE_RATE), r * r])
        if zi is None or len(zi) != len(a) - 1:
            zi = np.zeros(len(a) - 1)
        voiced[start:start + block], zi = lfilter([1.0], a, seg, zi=zi)
    voiced = lfilter([1.0, -0.9], [1.0], voiced)  # lip radiation: +6 dB/octave
    voiced /= voiced.std() + 1e-9
    # syllables at 3-6 Hz, with pauses of 0.2-0.6 s between phrases
    env = np.maximum(np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6.3)), 0.0) ** 0.7
    pos = 0
    while pos < n:
        pos += int(rng.uniform(1.0, 3.0) * SAMPLE_RATE)
        env[pos:pos + int(rng.uniform(0.2, 0.6) * SAMPLE_RATE)] = 0.0
    smooth = np.ones(160) / 160  # 10 ms
    env = np.convolve(env, smooth, mode="same")
    # fricative-like noise bursts (high-passed noise) in some of the gaps between syllables
    noise = lfilter([1.0, -0.95], [1.0], rng.standard_normal(n))
    bursts = np.convolve((rng.random(n) < 3.0 / SAMPLE_RATE).astype(float), np.ones(1200), mode="same")
    x = voiced * env + 0.3 * noise / (noise.std() + 1e-9) * np.minimum(bursts, 1.0)
    x += 0.01 * rng.standard_normal(n)  # recording noise floor
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def cmd_make_data(args) -> int:
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(args.seed)
    root = Path(args.dir)
    total = 0.0
    for split, count in (("train", args.train), ("dev", args.valid)):
        d = root / split
        (d / "wav").mkdir(parents=True, exist_ok=True)
        with open(d / "wav.scp", "w") as scp, open(d / "speech_shape", "w") as shape:
            for i in range(count):
                uid = f"synth_{split}_{i:04d}"
                wave = speech_like(rng.uniform(args.min_seconds, args.max_seconds), rng)
                path = (d / "wav" / f"{uid}.wav").resolve()
                sf.write(str(path), wave, SAMPLE_RATE, subtype="PCM_16")
                scp.write(f"{uid} {path}\n")
                shape.write(f"{uid} {len(wave)}\n")
                if split == "train":
                    total += len(wave) / SAMPLE_RATE
    print(json.dumps({"dir": str(root), "train_files": args.train, "valid_files": args.valid,
                      "train_audio_s": round(total, 1)}))
    return 0


# ------------------------------------------------------------------------------------ cuda tests
def cmd_cuda_tests(args) -> int:
    """Node ids (``file::test``) of the test functions whose body mentions CUDA (``torch.cuda``, ``cuda``)."""
    ids: List[str] = []
    for path in sorted(Path(args.tests_dir).glob("test_*.py")):
        source = path.read_text()
        if "cuda" not in source:
            continue
        for node in ast.parse(source).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                if "cuda" in (ast.get_source_segment(source, node) or ""):
                    ids.append(f"{path.as_posix()}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name.startswith("test") \
                            and "cuda" in (ast.get_source_segment(source, item) or ""):
                        ids.append(f"{path.as_posix()}::{node.name}::{item.name}")
    print("\n".join(ids))
    return 0


# ----------------------------------------------------------------------------------- run figures
def _read_shapes(files: List[str]) -> Dict[str, int]:
    lengths: Dict[str, int] = {}
    for name in files:
        with open(name) as f:
            for line in f:
                if line.strip():
                    uid, value = line.split(maxsplit=1)
                    lengths[uid] = int(value.split(",")[0])
    return lengths


def epoch_batches(conf: dict, epoch: int = 1, world_size: int = 1) -> List[List[str]]:
    """The training mini-batches (utterance ids) of ``epoch``, as ESPnet's trainer draws them."""
    from espnet2.iterators.sequence_iter_factory import SequenceIterFactory
    from espnet2.samplers.build_batch_sampler import build_batch_sampler

    sampler = build_batch_sampler(
        type=conf["batch_type"], shape_files=conf["train_shape_file"], fold_lengths=conf["fold_length"],
        batch_size=conf["batch_size"], batch_bins=conf["batch_bins"], sort_in_batch=conf["sort_in_batch"],
        sort_batch=conf["sort_batch"], drop_last=conf.get("drop_last_iter", False),
        min_batch_size=world_size if world_size > 1 else conf.get("min_batch_size", 1))
    batches = list(sampler)
    factory = SequenceIterFactory(dataset=[], batches=batches, seed=conf["seed"],
                                  num_iters_per_epoch=conf["num_iters_per_epoch"], shuffle=True,
                                  shuffle_within_batch=conf.get("shuffle_within_batch", False))
    return [list(b) for b in factory.build_iter(epoch).batch_sampler]


def cmd_run_figures(args) -> int:
    import datetime

    import torch
    import yaml

    exp = Path(args.exp_dir)
    conf = yaml.safe_load((exp / "config.yaml").read_text())
    lengths = _read_shapes(conf["train_shape_file"])
    collate = conf.get("collate_fn_conf") or {}
    cap = collate.get("max_sample_size") or math.inf
    floor = collate.get("min_sample_size") or 0
    batches = epoch_batches(conf)
    samples = 0
    for batch in batches:
        lens = [lengths[u] for u in batch if lengths[u] >= floor]  # the collate drops shorter ones
        if not lens:
            continue
        samples += sum(min(n, cap) for n in lens) if collate.get("pad") else len(lens) * min(min(lens), cap)
    ckpt = torch.load(exp / "checkpoint.pth", map_location="cpu", weights_only=False, mmap=True)
    train = ckpt["reporter"]["stats"][1]["train"]
    seconds = train["time"].total_seconds() if isinstance(train["time"], datetime.timedelta) else float(train["time"])
    extra = ckpt["model"].get("aqc._extra_state") or {}
    iters = int(train.get("total_count", len(batches)))
    out = {
        "mini_batches": len(batches), "mini_batches_run": iters, "accum_grad": conf["accum_grad"],
        "updates": extra.get("num_updates"),
        "utterances_per_batch": round(sum(map(len, batches)) / max(len(batches), 1), 1),
        "audio_s": round(samples / SAMPLE_RATE, 1), "train_s": round(seconds, 2),
        "audio_s_per_s": round(samples / SAMPLE_RATE / seconds, 1) if seconds > 0 else None,
        "data_wait_s": round(float(train.get("iter_time", 0.0)) * iters, 2),
        "gpu_max_reserved_gib": round(float(train["gpu_max_cached_mem_GB"]), 2)
        if "gpu_max_cached_mem_GB" in train else None,
        "use_amp": conf.get("use_amp"), "ngpu": conf.get("ngpu"), "distributed": conf.get("distributed"),
        "loss": round(float(train["loss"]), 4) if "loss" in train else None,
    }
    parts = [f"{out['audio_s']} s of audio in a {out['train_s']} s train loop",
             f"{out['updates']} updates of {out['utterances_per_batch']} utt",
             f"data wait {out['data_wait_s']} s"]
    if out["gpu_max_reserved_gib"] is not None:
        parts.append(f"GPU reserved {out['gpu_max_reserved_gib']} GiB")
    out["summary"] = f"{out['audio_s_per_s']} audio s/s ({', '.join(parts)})"
    print(json.dumps(out))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env")
    e.add_argument("--require_cuda", action="store_true")
    e.add_argument("--espnet", action="store_true", help="also report the autocast dtype ESPnet's trainer uses")
    d = sub.add_parser("make_data")
    d.add_argument("dir")
    d.add_argument("--train", type=int, default=64)
    d.add_argument("--valid", type=int, default=4)
    d.add_argument("--min_seconds", type=float, default=8.0)
    d.add_argument("--max_seconds", type=float, default=15.0)
    d.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("cuda_tests")
    t.add_argument("tests_dir", nargs="?", default="tests")
    r = sub.add_parser("run_figures")
    r.add_argument("exp_dir")
    args = p.parse_args(argv)
    return {"env": cmd_env, "make_data": cmd_make_data, "cuda_tests": cmd_cuda_tests,
            "run_figures": cmd_run_figures}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
