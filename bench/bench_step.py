#!/usr/bin/env python
"""Time one data2vec-aqc pre-training step against a Hugging Face data2vec-audio forward + backward.

aqc step  = zero_grad, forward(clean, augmented) (CNN on both views, masked student, EMA teacher,
            quantizer, k-means, negatives, losses), backward, update_teacher (EMA).
HF step   = zero_grad, transformers.Data2VecAudioModel(clean) in train mode, backward of
            last_hidden_state.pow(2).mean(): a plain data2vec-audio student of the same size.
Neither includes an optimizer step. Both models are random-initialised from the same sizes (no download).

The two steps are timed interleaved (aqc, HF, aqc, HF, ...) in one process; the table reports medians.
A second, separate pass times the components of the aqc step with hooks on the model's submodules and
wrappers around the functions model.py calls (the model code itself carries no timers); those timed
passes synchronise the device around every component, so their total is a little above the headline.
Peak memory is measured in a child process per model (one process cannot attribute its peak to A or B).

    python bench/bench_step.py                                   # tiny and base, CPU fp32, 2 threads
    python bench/bench_step.py --config base --repeats 20
    python bench/bench_step.py --device cuda --dtype bf16 --batch 8 --seconds 15   # GPU goal: >= 600 audio s/s
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from common import (SAMPLE_RATE, autocast_for, current_rss_mib, hf_model_like, interleaved, machine_info,  # noqa: E402
                    median, peak_rss_mib, speech_like, sync, table)

# ------------------------------------------------------------------------------------------- models


def build_aqc(config: str, layerdrop: float | None, device: str, models=None):
    if models is None:
        import aqc.models as models

    factory = {"base": models.data2vec_aqc_base, "tiny": models.data2vec_aqc_tiny}[config]
    overrides = {} if layerdrop is None else {"layerdrop": layerdrop}
    return factory(**overrides).to(device).train()


def load_models_at(rev: str):
    """``aqc.models`` as committed at git revision ``rev``, imported under another name (read-only git).

    Lets one process time the committed model against the working tree, interleaved (before/after).
    """
    import importlib
    import tempfile

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = subprocess.run(["git", "-C", repo, "ls-tree", "--name-only", rev, "aqc/models/"], check=True,
                           capture_output=True, text=True).stdout.split()
    root = tempfile.mkdtemp(prefix="aqc_ref_")
    package = "aqc_models_at_" + "".join(ch if ch.isalnum() else "_" for ch in rev)
    os.makedirs(os.path.join(root, package))
    for name in names:
        text = subprocess.run(["git", "-C", repo, "show", f"{rev}:{name}"], check=True, capture_output=True,
                              text=True).stdout
        with open(os.path.join(root, package, os.path.basename(name)), "w") as f:
            f.write(text)
    sys.path.insert(0, root)
    return importlib.import_module(package)


def make_batch(batch: int, seconds: float, device: str, seed: int = 0):
    samples = int(round(seconds * SAMPLE_RATE))
    clean = speech_like(batch, samples, seed)
    g = torch.Generator().manual_seed(seed + 1)
    augmented = clean + 0.3 * torch.randn(clean.shape, generator=g)
    augmented = (augmented - augmented.mean(1, keepdim=True)) / augmented.std(1, keepdim=True)
    # Pre-training batches are cropped to equal length (no padding), so lengths is None (reference).
    return clean.to(device), augmented.to(device)


def aqc_step_fn(model, clean, augmented, device, dtype) -> Callable[[], float]:
    state = {"update": 0}

    def step():
        model.zero_grad(set_to_none=True)
        with autocast_for(device, dtype):
            loss, _ = model(clean, augmented)
        loss.backward()
        state["update"] += 1
        model.update_teacher(state["update"])
        return loss

    return step


def hf_step_fn(hf, clean, device, dtype) -> Callable[[], float]:
    def step():
        hf.zero_grad(set_to_none=True)
        with autocast_for(device, dtype):
            hidden = hf(clean).last_hidden_state
        loss = hidden.float().pow(2).mean()
        loss.backward()
        return loss

    return step


# ---------------------------------------------------------------------------------------- breakdown
COMPONENTS = [
    "CNN (2 views, one batch)", "feature LN + projection", "masking (CPU)", "student encoder",
    "teacher + targets", "final_proj + regression", "quantizer (2 views)", "k-means", "negatives",
    "contrastive (contr_proj, logits, CE)", "rest of forward", "backward", "EMA teacher update",
]


class ComponentTimer:
    """Accumulates wall time per component: hooks on submodules, wrappers on model.py's functions."""

    def __init__(self, model, device):
        import aqc.models.model as model_module

        self.device = device
        self.totals: Dict[str, float] = defaultdict(float)  # wall seconds
        self.cpu_totals: Dict[str, float] = defaultdict(float)  # process CPU seconds
        self._handles = []
        self._patched = []
        modules = {
            "CNN (2 views, one batch)": [model.feature_extractor],
            "feature LN + projection": [model.feature_projection],
            "student encoder": [model.encoder],
            "teacher + targets": [model.teacher],
            "final_proj + regression": [model.final_proj],
            "quantizer (2 views)": [model.quantizer] if model.quantizer is not None else [],
            "contrastive (contr_proj, logits, CE)": [model.contr_proj] if model.contr_proj is not None else [],
        }
        for name, mods in modules.items():
            for mod in mods:
                self._hook(mod, name)
        functions = {
            "compute_span_mask": "masking (CPU)", "build_targets": "teacher + targets",
            "regression_loss": "final_proj + regression", "cluster_labels": "k-means",
            "sample_negative_indices": "negatives", "contrastive_logits": "contrastive (contr_proj, logits, CE)",
            "contrastive_loss": "contrastive (contr_proj, logits, CE)",
        }
        for fn_name, name in functions.items():
            original = getattr(model_module, fn_name)
            setattr(model_module, fn_name, self._wrap(original, name))
            self._patched.append((model_module, fn_name, original))

    def _hook(self, module, name):
        starts = []

        def pre(_mod, _args):
            sync(self.device)
            starts.append((time.perf_counter(), time.process_time()))

        def post(_mod, _args, _out):
            sync(self.device)
            wall, cpu = starts.pop()
            self.totals[name] += time.perf_counter() - wall
            self.cpu_totals[name] += time.process_time() - cpu

        self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def _wrap(self, fn, name):
        def wrapper(*args, **kwargs):
            with self.span(name):
                return fn(*args, **kwargs)

        return wrapper

    @contextmanager
    def span(self, name):
        sync(self.device)
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            sync(self.device)
            self.totals[name] += time.perf_counter() - wall
            self.cpu_totals[name] += time.process_time() - cpu

    def remove(self):
        for h in self._handles:
            h.remove()
        for module, fn_name, original in self._patched:
            setattr(module, fn_name, original)


def breakdown(model, clean, augmented, device, dtype, repeats: int) -> Dict[str, Dict[str, float]]:
    """Median wall and CPU seconds per component over ``repeats`` instrumented steps."""
    timer = ComponentTimer(model, device)
    per_step = {"wall": defaultdict(list), "cpu": defaultdict(list)}
    try:
        for update in range(1, repeats + 1):
            timer.totals.clear()
            timer.cpu_totals.clear()
            model.zero_grad(set_to_none=True)
            with timer.span("forward"):
                with autocast_for(device, dtype):
                    loss, _ = model(clean, augmented)
            with timer.span("backward"):
                loss.backward()
            with timer.span("EMA teacher update"):
                model.update_teacher(10_000 + update)
            for clock, totals in (("wall", dict(timer.totals)), ("cpu", dict(timer.cpu_totals))):
                outer = ("forward", "backward", "EMA teacher update")
                inside = sum(v for k, v in totals.items() if k not in outer)
                totals["rest of forward"] = totals.pop("forward") - inside
                totals["step (instrumented)"] = totals["rest of forward"] + inside + totals["backward"] + totals[
                    "EMA teacher update"]
                for k in COMPONENTS + ["step (instrumented)"]:
                    per_step[clock][k].append(totals.get(k, 0.0))
    finally:
        timer.remove()
    return {clock: {k: median(v) for k, v in d.items()} for clock, d in per_step.items()}


# -------------------------------------------------------------------------------------------- memory
def child_memory(args, which: str) -> dict:
    """Peak memory of 3 steps of one model, in a fresh process."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", which, "--config", args.config_one,
           "--batch", str(args.batch), "--seconds", str(args.seconds), "--device", args.device,
           "--dtype", args.dtype, "--threads", str(args.threads)]
    if args.layerdrop is not None:
        cmd += ["--layerdrop", str(args.layerdrop)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_child(args) -> None:
    clean, augmented = make_batch(args.batch, args.seconds, args.device)
    if args.child == "aqc":
        model = build_aqc(args.config_one, args.layerdrop, args.device)
        step = aqc_step_fn(model, clean, augmented, args.device, args.dtype)
    else:
        from aqc.models import Data2VecAQCConfig, TINY_OVERRIDES

        cfg = Data2VecAQCConfig(**(TINY_OVERRIDES if args.config_one == "tiny" else {}))
        model = hf_model_like(cfg, args.layerdrop).to(args.device).train()
        step = hf_step_fn(model, clean, args.device, args.dtype)
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2 ** 20
    else:
        base = current_rss_mib()
    for _ in range(3):
        step()
    sync(args.device)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else peak_rss_mib()
    print(json.dumps({"kind": "gpu_allocated" if cuda else "rss", "after_build_mib": base, "peak_mib": peak}))


# ---------------------------------------------------------------------------------------------- main
def bench_config(args, config: str) -> str:
    device, dtype = args.device, args.dtype
    torch.manual_seed(0)
    model = build_aqc(config, args.layerdrop, device)
    hf = None
    if not args.no_hf:
        hf = hf_model_like(model.config, args.layerdrop).to(device).train()
    clean, augmented = make_batch(args.batch, args.seconds, device)
    fns = {"aqc": aqc_step_fn(model, clean, augmented, device, dtype)}
    if args.baseline_rev:
        torch.manual_seed(0)
        ref = build_aqc(config, args.layerdrop, device, load_models_at(args.baseline_rev))
        fns[f"aqc@{args.baseline_rev}"] = aqc_step_fn(ref, clean, augmented, device, dtype)
    if hf is not None:
        fns["hf"] = hf_step_fn(hf, clean, device, dtype)
    cpu_times: Dict[str, list] = {}
    times = interleaved(fns, args.repeats, args.warmup, device, cpu_times)
    audio = args.batch * args.seconds
    frames = int(model.frame_lengths(torch.tensor([clean.shape[1]]))[0])
    on_cpu = torch.device(device).type == "cpu"

    args.config_one = config
    memory = {}
    if not args.no_memory:
        for which in ("aqc", "hf") if hf is not None else ("aqc",):
            memory[which] = child_memory(args, which)

    lines = [f"### {config}: batch {args.batch} x {args.seconds:g} s ({frames} frames), {device} {dtype}, "
             f"{args.repeats} interleaved repeats, layerdrop {model.config.layerdrop:g}\n"]
    rows = []
    for which, ts in times.items():
        med = median(ts)
        mem = memory.get(which)
        mem_s = "-" if mem is None else (f"{mem['peak_mib']:.0f} ({mem['peak_mib'] - mem['after_build_mib']:+.0f})")
        name = {"aqc": "aqc step (fwd+bwd+EMA)", "hf": "HF Data2VecAudioModel fwd+bwd"}.get(
            which, f"{which} step (fwd+bwd+EMA)")
        row = [name, f"{med:.3f}", f"{min(ts):.3f}"]
        if on_cpu:
            row.append(f"{median(cpu_times[which]):.3f}")
        rows.append(row + [f"{audio / med:.1f}", mem_s])
    mem_header = "peak RSS MiB (step)" if on_cpu else "peak GPU alloc MiB (step)"
    header = ["", "median s/step", "min s"] + (["median CPU s"] if on_cpu else []) + ["audio s/s", mem_header]
    lines.append(table(rows, header))
    lines.append("")
    for which in (k for k in times if k != "hf"):
        for other in [o for o in ("hf",) if o in times] + [o for o in times if o not in ("hf", "aqc", which)]:
            ratios = sorted(a / h for a, h in zip(times[which], times[other]))
            line = (f"ratio {which}/{other}, wall: {median(times[which]) / median(times[other]):.2f} "
                    f"(ratio of medians), per-pair median {median(ratios):.2f} "
                    f"(range {ratios[0]:.2f}-{ratios[-1]:.2f}), ratio of minima "
                    f"{min(times[which]) / min(times[other]):.2f}")
            if on_cpu:
                line += f"; CPU time: {median(cpu_times[which]) / median(cpu_times[other]):.2f}"
            lines.append(line)
    if not args.no_breakdown:
        parts = breakdown(model, clean, augmented, device, dtype, args.breakdown_repeats)
        clock = "cpu" if on_cpu else "wall"
        total = parts[clock]["step (instrumented)"]
        rows = [[k, f"{1000 * parts['wall'][k]:.1f}"] + ([f"{1000 * parts['cpu'][k]:.1f}"] if on_cpu else [])
                + [f"{100 * parts[clock][k] / total:.1f}"] for k in COMPONENTS]
        rows.append(["step (instrumented, synchronised)", f"{1000 * parts['wall']['step (instrumented)']:.1f}"]
                    + ([f"{1000 * total:.1f}"] if on_cpu else []) + ["100.0"])
        lines.append(f"\naqc step components (medians of {args.breakdown_repeats} instrumented steps"
                     + ("; % of CPU time" if on_cpu else "") + "):\n")
        lines.append(table(rows, ["component", "wall ms"] + (["CPU ms"] if on_cpu else []) + ["%"]))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=["tiny", "base", "both"], default="both")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of audio per utterance")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per model (interleaved)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--breakdown-repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--layerdrop", type=float, default=0.0,
                   help="layerdrop for both models (default 0: every step runs every layer, so medians are "
                        "comparable; pass -1 to keep each config's own value)")
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face baseline")
    p.add_argument("--baseline-rev", default=None,
                   help="also time aqc.models as committed at this git revision (e.g. HEAD), interleaved")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-component timing")
    p.add_argument("--child", choices=["aqc", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--config-one", dest="config_one", default="base", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.layerdrop is not None and args.layerdrop < 0:
        args.layerdrop = None
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            p.error("--device cuda but torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.dtype == "fp16" and not args.device.startswith("cuda"):
        p.error("--dtype fp16 autocast is for CUDA; use bf16 on CPU")
    if args.child:
        run_child(args)
        return
    print(f"# bench_step: {machine_info(args.device)}\n")
    configs = ["tiny", "base"] if args.config == "both" else [args.config]
    for config in configs:
        print(bench_config(args, config), flush=True)
        print()


if __name__ == "__main__":
    main()
