#!/usr/bin/env python
"""Whole pre-training runs: throughput against the bare model step, alone and on a shared machine (issue 20).

Overhead. ``python -m aqc.bin.ssl_train`` runs on real LibriSpeech utterances from ``../shared/data``
(every view cropped to ``--seconds``, so each batch holds exactly batch x seconds of audio), with the
config's augmentation (noise from the shared MUSAN sample) and data loading. Its speed is the training time
of its last epoch (ESPnet's ``[train] time=``; the first epoch warms up) in audio seconds per wall second.
The baseline, named ``bare step``, runs in this process on the same batch shape and the same model: zero
grad, forward of both views, backward, AdamW step, EMA update (``bench_step.py``'s step plus the
optimizer), median of ``--step_repeats``. Overhead = bare step audio/s divided by whole-run audio/s. The two
are interleaved (step, run, step, run, ...) and both use the same fixed thread count.

Contention. The tiny run alone, beside one busy process (``python -c "while True: pass"``, pinned to
nothing) and beside a second identical training, for two thread policies: ``fixed N`` (``AQC_NUM_THREADS=N``:
before issue 20, the recipes exported ``OMP_NUM_THREADS=2``) and ``auto`` (:mod:`aqc.cpu_threads`).
Slowdown = time beside the load / time alone, same policy; ``auto alone / fixed alone`` says what the
policy costs on an idle machine. Loads and policies are interleaved over ``--repeats``; medians.

    python bench/bench_run.py                          # overhead (tiny, base) and contention (tiny)
    python bench/bench_run.py --what overhead --configs tiny
    python bench/bench_run.py --what contention --repeats 3

Run nothing else meanwhile: every figure is a wall time.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from common import machine_info, median, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CONFIGS = {"tiny": REPO / "egs" / "TEMPLATE" / "conf" / "pretrain_tiny.yaml",
           "base": REPO / "egs" / "TEMPLATE" / "conf" / "pretrain_base.yaml"}
EPOCH_TIME = re.compile(r"(\d+)epoch results: \[train\].*?\btime=([0-9.]+) (seconds|minutes)")


# ------------------------------------------------------------------------------------------- data
def make_data(root: Path, seconds: float, utterances: int) -> Path:
    """wav.scp + speech_shape of LibriSpeech utterances at least ``seconds`` long, and a noise list."""
    files = sorted(glob.glob(str(DATA / "librispeech_unlabeled" / "**" / "*.flac"), recursive=True))
    if not files:
        raise SystemExit(f"bench_run: no LibriSpeech audio under {DATA}/librispeech_unlabeled")
    chosen = []
    for path in files:
        info = sf.info(path)
        if info.frames >= seconds * info.samplerate:
            chosen.append((Path(path).stem, path, info.frames))
        if len(chosen) == utterances + 2:
            break
    for name, items in (("train", chosen[:utterances]), ("dev", chosen[utterances:])):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "wav.scp", "w") as scp, open(d / "speech_shape", "w") as shape:
            for uid, path, frames in items:
                scp.write(f"{uid} {path}\n")
                shape.write(f"{uid} {frames}\n")
    noise = root / "noise"
    noise.mkdir(exist_ok=True)
    with open(noise / "wav.scp", "w") as f:
        for p in sorted(glob.glob(str(DATA / "musan" / "noise" / "free-sound" / "*.wav")))[:5]:
            f.write(f"{Path(p).stem} {p}\n")
    return root


# -------------------------------------------------------------------------------------- whole run
def run_command(config: str, data: Path, out: Path, batch: int, seconds: float, iters: int, workers: int) -> List[str]:
    samples = int(seconds * 16000)
    return [sys.executable, "-m", "aqc.bin.ssl_train", "--config", str(CONFIGS[config]),
            "--train_data_path_and_name_and_type", f"{data}/train/wav.scp,speech,sound",
            "--train_shape_file", f"{data}/train/speech_shape",
            "--valid_data_path_and_name_and_type", f"{data}/dev/wav.scp,speech,sound",
            "--valid_shape_file", f"{data}/dev/speech_shape",
            "--augmentation_conf", f"noise_scp={data}/noise/wav.scp",
            "--collate_fn_conf", f"max_sample_size={samples}", "--collate_fn_conf", f"min_sample_size={samples}",
            "--samples_per_update", "none", "--batch_bins_per_rank", "none", "--updates_per_epoch", "none",
            "--batch_type", "unsorted", "--batch_size", str(batch), "--valid_batch_size", "2",
            "--num_iters_per_epoch", str(iters), "--max_epoch", "2", "--accum_grad", "1",
            "--num_workers", str(workers), "--ngpu", "0", "--seed", "0", "--log_interval", str(max(iters, 1)),
            "--use_matplotlib", "false", "--use_tensorboard", "false", "--output_dir", str(out)]


def start_run(cmd: List[str], threads: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(AQC_NUM_THREADS=threads, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=log.parent)


def epoch_seconds(log: Path) -> float:
    """ESPnet's training time of the last epoch (the first one warms up: k-means, allocations)."""
    found = EPOCH_TIME.findall(log.read_text(errors="replace"))
    if not found:
        raise RuntimeError(f"no epoch result in {log}:\n{log.read_text(errors='replace')[-3000:]}")
    _, value, unit = found[-1]
    return float(value) * (60.0 if unit == "minutes" else 1.0)


def whole_run(config: str, data: Path, work: Path, batch: int, seconds: float, iters: int, workers: int,
              threads: str, tag: str, beside: Optional[str] = None) -> float:
    """Seconds of the last epoch of one run, optionally beside a busy loop or a second training."""
    out = work / tag
    cmd = run_command(config, data, out, batch, seconds, iters, workers)
    others: List[subprocess.Popen] = []
    if beside == "busy":
        others.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
    elif beside == "training":
        twin = work / f"{tag}_twin"
        others.append(start_run(run_command(config, data, twin, batch, seconds, iters, workers), threads,
                                Path(f"{twin}.log")))
    try:
        run = start_run(cmd, threads, Path(f"{out}.log"))
        if run.wait() != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{Path(f'{out}.log').read_text()[-3000:]}")
    finally:
        for p in others:
            p.kill()
            p.wait()
    return epoch_seconds(Path(f"{out}.log"))


# -------------------------------------------------------------------------------------- bare step
def bare_step(config: str, batch: int, seconds: float, repeats: int, threads: int) -> float:
    """Median seconds of the model step (with AdamW) on a batch like the run's, in this process."""
    import yaml

    from aqc.models import Data2VecAQC
    from aqc.models.io import config_from_model_conf

    torch.set_num_threads(threads)
    conf = yaml.safe_load(open(CONFIGS[config]))
    model = Data2VecAQC(config_from_model_conf(conf["model_conf"])).train()
    optimizer = torch.optim.AdamW(model.student_parameters(), lr=1e-5)
    samples = int(seconds * 16000)
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(batch, samples, generator=g)
    augmented = clean + 0.3 * torch.randn(batch, samples, generator=g)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = model(clean, augmented)
        loss.backward()
        optimizer.step()
        model.update_teacher(i + 1)
        if i >= 2:
            times.append(time.perf_counter() - start)
    return median(times)


def overhead(args, data: Path, work: Path) -> List[List[str]]:
    rows = []
    for config in args.configs:
        batch, iters = (args.batch, args.iters) if config == "tiny" else (args.base_batch, args.base_iters)
        audio = batch * args.seconds
        steps, runs = [], []
        for r in range(args.overhead_repeats):
            steps.append(bare_step(config, batch, args.seconds, args.step_repeats, args.threads))
            runs.append(whole_run(config, data, work, batch, args.seconds, iters, args.workers, str(args.threads),
                                  f"overhead_{config}_{r}") / iters)
        step, run = median(steps), median(runs)
        rows.append([config, f"{batch} x {args.seconds:g} s", str(args.threads), str(args.workers),
                     f"{audio / step:.1f}", f"{audio / run:.1f}", f"{run / step:.2f}x",
                     " ".join(f"{s:.3f}/{r:.3f}" for s, r in zip(steps, runs))])
        print(table([rows[-1]], OVERHEAD_HEADER), flush=True)
    return rows


OVERHEAD_HEADER = ["config", "batch", "threads", "workers", "bare step audio s/s", "whole run audio s/s",
                   "overhead", "step/run s per update (each repeat)"]


def contention(args, data: Path, work: Path) -> List[List[str]]:
    policies = [(f"fixed {args.threads}", str(args.threads)), ("auto", "auto")]
    loads = [("alone", None), ("beside a busy loop", "busy"), ("beside a 2nd training", "training")]
    times: Dict[Tuple[str, str], List[float]] = {}
    for r in range(args.repeats):
        for load, beside in loads:
            for policy, threads in policies:
                seconds = whole_run("tiny", data, work, args.batch, args.seconds, args.contention_iters, args.workers,
                                    threads, f"cont_{policy.replace(' ', '')}_{beside or 'alone'}_{r}", beside)
                times.setdefault((policy, load), []).append(seconds / args.contention_iters)
                print(f"  {policy:>8} {load:<24} {seconds / args.contention_iters:.3f} s per update", flush=True)
    rows = []
    fixed_alone = median(times[(policies[0][0], "alone")])
    for policy, _ in policies:
        alone = median(times[(policy, "alone")])
        for load, _ in loads:
            t = median(times[(policy, load)])
            rows.append([policy, load, f"{t:.3f}", f"{t / alone:.2f}x", f"{t / fixed_alone:.2f}x",
                         " ".join(f"{x:.3f}" for x in times[(policy, load)])])
    return rows


CONTENTION_HEADER = ["policy", "load", "s per update", "slowdown (same policy alone)", f"vs fixed alone",
                     "each repeat"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=["all", "overhead", "contention"], default="all")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["tiny", "base"])
    parser.add_argument("--seconds", type=float, default=2.0, help="audio per utterance view")
    parser.add_argument("--batch", type=int, default=4, help="tiny: utterances per batch")
    parser.add_argument("--iters", type=int, default=40, help="tiny: updates per epoch")
    parser.add_argument("--base_batch", type=int, default=2)
    parser.add_argument("--base_iters", type=int, default=6)
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers of the runs")
    parser.add_argument("--threads", type=int, default=2, help="the fixed thread count (overhead; 'fixed' policy)")
    parser.add_argument("--step_repeats", type=int, default=10)
    parser.add_argument("--overhead_repeats", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="contention: rounds over loads and policies")
    parser.add_argument("--contention_iters", type=int, default=15, help="contention: updates per epoch")
    args = parser.parse_args()

    print(machine_info("cpu"), flush=True)
    with tempfile.TemporaryDirectory(prefix="aqc_bench_run_") as tmp:
        work = Path(tmp)
        data = make_data(work / "data", args.seconds, 24)
        if args.what in ("all", "overhead"):
            rows = overhead(args, data, work)
            print("\nWhole-run overhead (last epoch of 2, data loading and augmentation included)")
            print(table(rows, OVERHEAD_HEADER))
        if args.what in ("all", "contention"):
            rows = contention(args, data, work)
            print(f"\nContention (tiny, batch {args.batch} x {args.seconds:g} s, {args.contention_iters} updates per epoch)")
            print(table(rows, CONTENTION_HEADER))
    return 0


if __name__ == "__main__":
    sys.exit(main())
