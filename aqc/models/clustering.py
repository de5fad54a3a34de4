"""Cosine k-means of the quantized codes, used to soften negatives from the positive's own cluster.

Two backends: ``batched`` (in-house: Lloyd iterations as matrix products and ``index_add_``, no
autograd, seeded, bounded) and ``fast_pytorch_kmeans`` (the reference's library).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def cosine_kmeans(x: Tensor, num_clusters: int, max_iter: int = 30, tol: float = 1e-4,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Cluster the rows of ``x`` (N, D) by cosine similarity; returns (N,) int64 labels.

    Initial centroids are drawn by k-means++ seeding (the reference draws plain random rows, which
    often starts two centroids in one cluster; k-means++ costs about one Lloyd iteration). Stops when
    the squared centroid shift falls below ``tol`` or after ``max_iter`` Lloyd iterations. An empty
    cluster keeps its previous centroid.
    """
    x = F.normalize(x.detach().float(), dim=-1)
    n = x.shape[0]
    k = max(1, min(num_clusters, n))
    centroids = _kmeans_plus_plus(x, k, generator)
    ones = x.new_ones(n)
    for _ in range(max_iter):
        labels = (x @ centroids.T).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = x.new_zeros(k).index_add_(0, labels, ones)  # bincount without its host sync on GPU
        new = torch.where((counts > 0).unsqueeze(1), F.normalize(sums, dim=-1), centroids)
        shift = ((new - centroids) ** 2).sum()
        centroids = new
        if shift.item() <= tol:  # the one host sync per Lloyd iteration
            break
    return (x @ centroids.T).argmax(dim=1)


def _kmeans_plus_plus(x: Tensor, k: int, generator: Optional[torch.Generator]) -> Tensor:
    """k-means++ seeding on unit vectors, with cosine distance 1 - cos.

    Each centroid after the first is row ``argmax(weight / E)`` with E ~ Exp(1) per row: the draw
    ``torch.multinomial(weight, 1)`` makes (same stream, same result), done on ``x``'s device. The
    exponentials for all k - 1 draws come from ``generator`` (CPU) in one call and reach the device in
    one copy, so the loop makes no host round trip per centroid (it made one per centroid on a GPU).
    """
    n = x.shape[0]
    first = torch.randint(n, (1,), generator=generator)
    noise = torch.empty(k - 1, n, dtype=torch.float64).exponential_(1, generator=generator)
    first, noise = first.to(x.device), noise.to(x.device)
    chosen = torch.empty(k, dtype=torch.long, device=x.device)
    chosen[:1] = first
    taken = torch.zeros(n, dtype=torch.bool, device=x.device)
    taken[first] = True
    distance = (1.0 - x @ x.index_select(0, first).T).squeeze(1).clamp(min=0.0)
    for i in range(1, k):
        weights = distance.double()
        # fewer distinct points than clusters (all distances 0): take any unchosen row, uniformly
        weights = torch.where(weights.sum() > 0, weights, (~taken).double())
        nxt = (weights / noise[i - 1]).argmax().view(1)
        chosen[i:i + 1] = nxt
        taken[nxt] = True
        distance = torch.minimum(distance, (1.0 - x @ x.index_select(0, nxt).T).squeeze(1).clamp(min=0.0))
    return x.index_select(0, chosen)


@torch.no_grad()
def fast_pytorch_kmeans_labels(x: Tensor, num_clusters: int, max_iter: int = 100, tol: float = 1e-4,
                               seed: Optional[int] = None) -> Tensor:
    """The reference backend (fast-pytorch-kmeans, cosine mode), on detached fp32 data.

    fast-pytorch-kmeans 0.2.x draws its initial centroids with ``torch.randint`` from the global generator
    of ``x``'s device (the reference's older version used numpy's ``np.random.choice``). With ``seed`` both
    are seeded inside a fork of the random state: the same seed gives the same labels, and the caller's
    random streams (torch on the CPU and on ``x``'s device, numpy) are left exactly where they were.
    Without ``seed`` the draw comes from, and advances, the global streams.
    """
    import numpy as np
    from fast_pytorch_kmeans import KMeans

    x = x.detach().float()
    k = max(1, min(num_clusters, x.shape[0]))

    def fit() -> Tensor:
        kmeans = KMeans(n_clusters=k, mode="cosine", max_iter=max_iter, tol=tol, verbose=0)
        return kmeans.fit_predict(x)

    if seed is None:
        return fit().long()
    cuda = [x.device] if x.device.type == "cuda" else []
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(seed % (2 ** 63))
            if cuda:
                with torch.cuda.device(x.device):
                    torch.cuda.manual_seed(seed % (2 ** 63))
            np.random.seed(seed % (2 ** 32))
            labels = fit()
    finally:
        np.random.set_state(numpy_state)
    return labels.long()


def cluster_labels(x: Tensor, num_clusters: int, backend: str = "batched", max_iter: int = 30,
                   tol: float = 1e-4, seed: int = 0) -> Tensor:
    if backend == "batched":
        generator = torch.Generator().manual_seed(seed)
        return cosine_kmeans(x, num_clusters, max_iter, tol, generator)
    if backend == "fast_pytorch_kmeans":
        return fast_pytorch_kmeans_labels(x, num_clusters, max_iter, tol, seed)
    raise ValueError(f"unknown k-means backend {backend!r}: use batched or fast_pytorch_kmeans")


def num_clusters_for(num_frames: int, cluster_factor: int) -> int:
    """k = max(2, T // cluster_factor), T = frames per utterance of the batch (reference)."""
    return max(2, num_frames // cluster_factor)
