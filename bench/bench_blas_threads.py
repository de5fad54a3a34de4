#!/usr/bin/env python
"""Pre-training updates with numpy's BLAS pool at its own thread count against one thread.

What it times: a CPU pre-training update as ``aqc.bin.ssl_train`` runs it with ``num_workers: 0``: the
collate of 8 utterances (``AQCCollateFn`` with egs/asterisk's ``augmentation_conf`` and
``collate_fn_conf``: augmentation of each whole utterance, normalisation, crop to at most 1 s) in the training
process, then the tiny model's forward, backward, Adam step and EMA update.
The baseline is the same process with numpy's OpenBLAS at the thread count it started with (the cores,
unless ``OPENBLAS_NUM_THREADS`` is set); the other arm is what ``aqc.cpu_threads`` sets, one thread. The
arms alternate in blocks, and each block restarts the collate and model from the same seeds, so both
arms compute the same updates; the bench checks that their batches and losses are bit-identical.

Why it matters: the augmentation's ``np.dot`` over a whole utterance wakes OpenBLAS's threads, which then
spin for about 0.1 s on the cores PyTorch's OpenMP threads need for the model (``aqc.cpu_threads``).

    python bench/bench_blas_threads.py                     # egs/asterisk's prompts, 2 torch threads
    python bench/bench_blas_threads.py --blocks 6 --updates 12
"""
from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from common import machine_info, table  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
RECIPE_CONFIG = Path(__file__).resolve().parent.parent / "egs" / "asterisk" / "conf" / "pretrain_aqc.yaml"


def load_prompts(limit: int) -> list:
    import torchaudio.functional as AF

    files = sorted(glob.glob(str(DATA / "asterisk_en" / "wav" / "*.wav")))[:limit]
    if not files:
        raise SystemExit(f"bench_blas_threads: no .wav under {DATA / 'asterisk_en' / 'wav'}")
    out = []
    for path in files:
        wave, rate = sf.read(path, dtype="float32")
        if rate != 16000:
            wave = AF.resample(torch.from_numpy(wave), rate, 16000).numpy()
        if len(wave) >= 3200:
            out.append(wave)
    return out


def numpy_pool():
    """numpy's OpenBLAS, as ``aqc.cpu_threads`` finds the pools it limits."""
    from aqc.cpu_threads import library_blas_pools

    pools = [p for p in library_blas_pools() if "numpy" in p.filepath]
    if not pools:
        raise SystemExit("bench_blas_threads: numpy's OpenBLAS pool not found (threadpoolctl sees none)")
    return pools[0]


def block(prompts, noise_scp: str, updates: int, batch: int):
    """``updates`` updates from fixed seeds: (seconds per update, losses, a checksum of the batches)."""
    from aqc.espnet.collate import AQCCollateFn
    from aqc.models import data2vec_aqc_tiny

    torch.manual_seed(0)
    model = data2vec_aqc_tiny().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    recipe = yaml.safe_load(RECIPE_CONFIG.read_text())
    augmentation = {**recipe["augmentation_conf"], "noise_scp": noise_scp}
    collate = AQCCollateFn(train=True, seed=0, augmentation_conf=augmentation, **recipe["collate_fn_conf"])
    rng = np.random.default_rng(0)
    losses, checksum, times = [], 0.0, []
    for update in range(1, updates + 1):
        start = time.perf_counter()
        picks = rng.choice(len(prompts), size=batch, replace=False)
        _, views = collate([(f"u{i}", {"speech": prompts[i]}) for i in picks])
        loss, _ = model(views["speech"], views["speech_aug"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        model.update_teacher(update)
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
        checksum += float(views["speech_aug"].double().sum())
    return times[1:], losses, checksum  # the first update of a block pays for the model's build


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4, help="blocks per arm, alternating")
    parser.add_argument("--updates", type=int, default=12, help="updates per block")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import tempfile

    from aqc.augment.make_list import make_audio_list

    prompts = load_prompts(200)
    pool = numpy_pool()
    own = pool.num_threads
    with tempfile.TemporaryDirectory() as tmp:
        make_audio_list(DATA / "musan", ["noise/free-sound"], Path(tmp) / "noise")
        noise_scp = str(Path(tmp) / "noise" / "wav.scp")
        arms = {f"numpy's OpenBLAS at {own} threads (baseline)": own, "numpy's OpenBLAS at 1 thread (aqc)": 1}
        times = {name: [] for name in arms}
        results = {}
        for _ in range(args.blocks):
            for name, threads in arms.items():
                pool.set_num_threads(threads)
                seconds, losses, checksum = block(prompts, noise_scp, args.updates, args.batch)
                times[name].extend(seconds)
                results.setdefault(name, (losses, checksum))
        pool.set_num_threads(own)

    print(machine_info())
    print(f"\n{len(prompts)} egs/asterisk prompts, batch {args.batch} cropped to <= 1 s, tiny model, "
          f"{args.threads} torch threads, {args.blocks} blocks x {args.updates} updates per arm (first of each "
          "block left out)\n")
    base = statistics.median(times[next(iter(arms))])
    rows = [(name, f"{statistics.median(t):.3f}", f"{min(t):.3f}", f"{base / statistics.median(t):.2f}x")
            for name, t in times.items()]
    print(table(rows, ["arm", "median s/update", "min s", "speed vs baseline"]))
    (losses_a, sum_a), (losses_b, sum_b) = results.values()
    same = losses_a == losses_b and sum_a == sum_b
    print(f"\nbatches and losses bit-identical across the arms: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
