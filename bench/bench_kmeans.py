#!/usr/bin/env python
"""k-means backends for the clustering module: time and clustering quality at the sizes training uses.

The model clusters the 256-d ``project_q`` outputs of both views at every masked frame of the batch,
N = 2 x B x M points (M ~ 0.49 T masked frames per utterance), into k = max(2, T // 16) clusters:

    small : B = 2,  T = 249 (5 s),  M = 122  ->  N =   488, k = 15
    paper : B = 12, T = 999 (20 s), M = 490  ->  N = 11760, k = 62   (3.8 M samples per GPU)

Backends: ``batched`` (aqc.models.clustering.cosine_kmeans: k-means++ seeding, Lloyd, 30 iterations
at most, the model's default) and ``fast_pytorch_kmeans`` (the reference library, random init) with the
model's bound (30) and the reference's (100). Quality is the cosine inertia, sum over points of
1 - cos(x, centroid of its cluster), the centroid recomputed from the labels in the same way for every
backend (lower is better), averaged over seeds.

Two kinds of points:
    codes : a randomly initialised quantizer (eval) applied to LayerNorm'd "phone-like" features
            (40 prototypes held for 3-12 frames, plus noise), i.e. what the model clusters early on
    vmf   : 50 von Mises-Fisher-like clusters of different spreads plus 10 % uniform points

The k-means share of a step: a base step (2 x 5 s, forward + backward + EMA) is timed interleaved with
the small-size runs; for the paper size the step time is --paper-step-time when given, else the small
step scaled linearly by audio seconds (x24). That underestimates the step (attention is quadratic), so
the share printed is an upper bound.

    python bench/bench_kmeans.py
    python bench/bench_kmeans.py --device cuda --paper-step-time 0.45
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from common import interleaved, machine_info, median, speech_like, table  # noqa: E402

SCALES = {  # name: (batch, frames per utterance, masked frames per utterance)
    "small": (2, 249, 122),
    "paper": (12, 999, 490),
}


def code_points(n: int, seed: int) -> torch.Tensor:
    from aqc.models.quantizer import GumbelVectorQuantizer

    torch.manual_seed(seed)
    q = GumbelVectorQuantizer(512, 320, 2, 256).eval()
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(40, 512, generator=g)
    ids: List[int] = []
    while len(ids) < n:
        ids += [int(torch.randint(40, (1,), generator=g))] * int(torch.randint(3, 13, (1,), generator=g))
    feats = prototypes[torch.tensor(ids[:n])] + 0.7 * torch.randn(n, 512, generator=g)
    with torch.no_grad():
        return q(F.layer_norm(feats, (512,))).quantized


def vmf_points(n: int, seed: int, clusters: int = 50, dim: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(clusters, dim, generator=g), dim=-1)
    spread = 0.3 + 1.2 * torch.rand(clusters, 1, generator=g)  # noise norm relative to the unit center
    n_uniform = n // 10
    ids = torch.randint(clusters, (n - n_uniform,), generator=g)
    x = centers[ids] + spread[ids] * torch.randn(n - n_uniform, dim, generator=g) / dim ** 0.5
    x = torch.cat([x, torch.randn(n_uniform, dim, generator=g)])
    return F.normalize(x[torch.randperm(n, generator=g)], dim=-1)


def cosine_inertia(x: torch.Tensor, labels: torch.Tensor) -> float:
    """sum_i 1 - cos(x_i, c_{label_i}), c_k = normalised mean of cluster k's (normalised) members."""
    x = F.normalize(x.double(), dim=-1)
    labels = labels.to(x.device).long()
    sums = torch.zeros(int(labels.max()) + 1, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    centroids = F.normalize(sums, dim=-1)
    return float((1.0 - (x * centroids[labels]).sum(-1)).sum())


def backends(iters: int) -> Dict[str, Callable]:
    from aqc.models.clustering import cluster_labels

    return {
        f"batched ({iters} it, model default)": lambda x, k, s: cluster_labels(x, k, "batched", iters, 1e-4, s),
        f"fast-pytorch-kmeans ({iters} it)": lambda x, k, s: cluster_labels(x, k, "fast_pytorch_kmeans", iters,
                                                                         1e-4, s),
        "fast-pytorch-kmeans (100 it, reference)": lambda x, k, s: cluster_labels(x, k, "fast_pytorch_kmeans",
                                                                                 100, 1e-4, s),
    }


def base_step_fn(device: str, dtype: str = "fp32") -> Callable[[], None]:
    from aqc.models import data2vec_aqc_base

    from common import autocast_for

    torch.manual_seed(0)
    model = data2vec_aqc_base(layerdrop=0.0).to(device).train()
    clean = speech_like(2, 80000).to(device)
    aug = clean + 0.3 * torch.randn_like(clean)
    state = {"n": 0}

    def step():
        model.zero_grad(set_to_none=True)
        with autocast_for(device, dtype):
            loss, _ = model(clean, aug)
        loss.backward()
        state["n"] += 1
        model.update_teacher(state["n"])

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast of the base step")
    p.add_argument("--scales", default="small,paper")
    p.add_argument("--data", default="codes,vmf")
    p.add_argument("--seeds", type=int, default=5, help="data/initialisation seeds for the inertia")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per backend and scale (interleaved)")
    p.add_argument("--iters", type=int, default=30, help="Lloyd bound (the model's kmeans_iters)")
    p.add_argument("--no-step", action="store_true", help="do not time a base step (no share column)")
    p.add_argument("--step-repeats", type=int, default=3)
    p.add_argument("--paper-step-time", type=float, default=None,
                   help="seconds of a base step at the paper batch (12 x 20 s) on this device, if measured")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = args.device
    print(f"# bench_kmeans: {machine_info(device)}\n")

    fns = backends(args.iters)
    small_step = None
    for scale in args.scales.split(","):
        batch, frames, masked = SCALES[scale]
        n, k = 2 * batch * masked, max(2, frames // 16)
        for data in args.data.split(","):
            make = {"codes": code_points, "vmf": vmf_points}[data]
            points = [make(n, seed).to(device) for seed in range(args.seeds)]
            inertia = {name: [cosine_inertia(x, fn(x, k, s)) for s, x in enumerate(points)] for name, fn in fns.items()}
            timed_fns = {name: (lambda fn=fn: fn(points[0], k, 0)) for name, fn in fns.items()}
            with_step = scale == "small" and not args.no_step and small_step is None
            if with_step:
                timed_fns["base step"] = base_step_fn(device, args.dtype)
            times = interleaved(timed_fns, args.step_repeats if with_step else args.repeats, 1, device)
            if with_step:
                small_step = median(times.pop("base step"))
            if scale == "small":
                step, step_note = small_step, "measured"
            elif args.paper_step_time:
                step, step_note = args.paper_step_time, "given"
            else:
                step = None if small_step is None else small_step * (batch * frames) / (2 * 249)
                step_note = "small step x audio ratio (upper bound on the share)"
            ref = sum(inertia["fast-pytorch-kmeans (100 it, reference)"]) / args.seeds
            rows = []
            for name in fns:
                t = median(times[name])
                share = "-" if step is None else f"{100 * t / step:.2f}"
                rows.append([name, f"{1000 * t:.1f}", f"{1000 * min(times[name]):.1f}",
                             f"{sum(inertia[name]) / args.seeds:.1f}",
                             f"{sum(inertia[name]) / args.seeds / ref:.3f}", share])
            print(f"### {scale} ({data}): N = {n} points x 256, k = {k}, {device}")
            step_txt = "-" if step is None else f"{step:.2f} s ({step_note})"
            print(f"base step at this batch: {step_txt}\n")
            print(table(rows, ["backend", "median ms", "min ms", f"inertia (mean of {args.seeds} seeds)",
                               "inertia / reference", "% of a base step"]))
            print(flush=True)


if __name__ == "__main__":
    main()
