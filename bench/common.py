"""Helpers shared by the aqc benchmarks: inputs, timing, memory, the Hugging Face baseline, machine info."""
from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import subprocess
import time
from contextlib import nullcontext
from typing import Callable, Dict, List, Sequence, Tuple

import torch

SAMPLE_RATE = 16000
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def speech_like(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    """(batch, samples) normalised waveforms: an amplitude-modulated tone plus noise (as the tests use)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SAMPLE_RATE
    f0 = 110 + 220 * torch.rand(batch, 1, generator=g)
    x = torch.sin(2 * math.pi * f0 * t) * torch.sin(2 * math.pi * 3 * t) + 0.3 * torch.randn(batch, samples, generator=g)
    return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work, so that a host clock measures it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def autocast_for(device: str, dtype: str):
    """Autocast context for ``--dtype`` (fp32: none)."""
    if DTYPES[dtype] is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[dtype])


def timed(fn: Callable[[], object], device) -> float:
    """Seconds one call of ``fn`` takes, synchronising the device before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def timed_both(fn: Callable[[], object], device) -> Tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call of ``fn``.

    On a machine shared with other jobs the wall time includes the time the threads wait to be scheduled;
    the process CPU time counts only the work (and OpenMP spin-waits), so it is the steadier of the two.
    """
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def interleaved(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int, device,
                cpu_times: Dict[str, List[float]] | None = None) -> Dict[str, List[float]]:
    """Run the callables A, B, A, B, ... ``repeats`` times each (after ``warmup`` untimed rounds).

    Returns the wall times; ``cpu_times``, when given, receives the process CPU times. Interleaving
    makes the ratio robust against the load of other processes drifting during the run; the order
    alternates (A B, B A, ...) so that neither callable always runs first.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            wall, cpu = timed_both(fns[name], device)
            times[name].append(wall)
            if cpu_times is not None:
                cpu_times.setdefault(name, []).append(cpu)
    return times


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB.

    Reads VmHWM from /proc/self/status: unlike getrusage's ru_maxrss, it starts afresh at execve, so a
    child process started from a big parent does not inherit the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def current_rss_mib() -> float:
    try:
        import psutil

        return psutil.Process(os.getpid()).memory_info().rss / 2 ** 20
    except ImportError:  # pragma: no cover
        return float("nan")


def hf_config_like(cfg, layerdrop: float | None = None):
    """A ``transformers.Data2VecAudioConfig`` with the sizes and dropouts of an aqc config (random init)."""
    from transformers import Data2VecAudioConfig

    return Data2VecAudioConfig(
        hidden_size=cfg.embed_dim, num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.ffn_dim,
        conv_dim=[c for c, _, _ in cfg.conv_layers], conv_kernel=[k for _, k, _ in cfg.conv_layers],
        conv_stride=[s for _, _, s in cfg.conv_layers], conv_bias=cfg.conv_bias,
        num_feat_extract_layers=len(cfg.conv_layers),
        conv_pos_kernel_size=cfg.pos_conv_kernel, num_conv_pos_embeddings=cfg.pos_conv_depth,
        num_conv_pos_embedding_groups=cfg.pos_conv_groups,
        hidden_dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout, feat_proj_dropout=cfg.encoder_dropout_input,
        layerdrop=cfg.layerdrop if layerdrop is None else layerdrop,
    )


def hf_model_like(cfg, layerdrop: float | None = None):
    from transformers import Data2VecAudioModel

    hf_cfg = hf_config_like(cfg, layerdrop)
    try:
        return Data2VecAudioModel._from_config(hf_cfg, attn_implementation="sdpa")
    except (TypeError, ValueError):  # older/newer transformers without that keyword
        return Data2VecAudioModel(hf_cfg)


def machine_info(device: str = "cpu") -> str:
    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    info = (f"CPU {model}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} intra-op threads")
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info += f", GPU {torch.cuda.get_device_name()}"
    try:
        info += f", load average {os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    return info


def table(rows: List[Sequence[str]], header: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "| " + " | ".join("{:<%d}" % w for w in widths) + " |"
    lines = [fmt.format(*header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt.format(*[str(c) for c in r]) for r in rows]
    return "\n".join(lines)
