#!/usr/bin/env python3
"""Speed of the augmentation chain: x real time per CPU core, each stage and the whole chain.

    tools/venv/bin/python bench/bench_augment.py [--num_utts 20] [--repeats 3]

Real 16 kHz speech (../shared/data/librispeech_unlabeled) and the MUSAN stand-in noise
(../shared/data/musan/noise/free-sound); real RIRs from ../shared/data/rir. One thread for numpy and
torch, CPU time (time.process_time, all threads counted) so that other jobs on the machine do not skew
the numbers. Baselines in the same run: an identity copy, and pedalboard's Reverb alone with its
defaults (the floor any Freeverb-based stage pays). Target: whole chain >= 100x real time per core.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their thread pools

import argparse  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, List, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from aqc.augment import AudioList, AugmentationConfig, build_augmentation, normalize  # noqa: E402
from aqc.augment.make_list import make_audio_list  # noqa: E402
from aqc.augment.transforms import BackgroundNoise, FreeverbReverb, GaussianNoise, RirReverb  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
TARGET = 100.0
Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def load_speech(num_utts: int) -> List[np.ndarray]:
    files = sorted((DATA / "librispeech_unlabeled").rglob("*.flac"))[:num_utts]
    if not files:
        raise SystemExit(f"bench_augment: no .flac under {DATA / 'librispeech_unlabeled'}")
    return [sf.read(str(f), dtype="float32")[0] for f in files]


def cpu_seconds(transform: Transform, utts: List[np.ndarray], repeats: int) -> float:
    rng = np.random.default_rng(0)
    transform(utts[0], rng)  # warm-up: lazy imports, plugin construction, page cache
    start = time.process_time()
    for _ in range(repeats):
        for x in utts:
            transform(x, rng)
    return time.process_time() - start


def pedalboard_alone() -> Transform:
    import pedalboard

    reverb = pedalboard.Reverb()
    return lambda x, rng: reverb(x, 16000)


def cases(noise_scp: str, rir_scp: str) -> List[Tuple[str, Transform]]:
    noises = AudioList(noise_scp, 16000)
    chain = build_augmentation(AugmentationConfig(noise_scp=noise_scp))
    chain_rir = build_augmentation(AugmentationConfig(noise_scp=noise_scp, rir_scp=rir_scp))
    always = build_augmentation(AugmentationConfig(noise_scp=noise_scp, gaussian_p=1, reverb_p=1, background_p=1))
    return [
        ("baseline: identity copy", lambda x, rng: x.copy()),
        ("baseline: pedalboard Reverb alone", pedalboard_alone()),
        ("1 gaussian noise", GaussianNoise()),
        ("2 reverb, Freeverb", FreeverbReverb()),
        ("2 reverb, RIR convolution", RirReverb(AudioList(rir_scp, 16000, what="RIR"))),
        ("3 background noise", BackgroundNoise(noises)),
        ("normalize", lambda x, rng: normalize(x)),
        ("chain, reference p (Freeverb)", chain),
        ("chain, reference p (RIR)", chain_rir),
        ("chain, every stage fires", always),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_utts", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)

    utts = load_speech(args.num_utts)
    audio_s = sum(len(x) for x in utts) / 16000 * args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        make_audio_list(DATA / "musan", ["noise/free-sound"], Path(tmp) / "noise")
        make_audio_list(DATA / "rir", ["."], Path(tmp) / "rir", channel="first", what="RIR")
        rows = [(name, cpu_seconds(fn, utts, args.repeats))
                for name, fn in cases(str(Path(tmp) / "noise" / "wav.scp"), str(Path(tmp) / "rir" / "wav.scp"))]

    print(f"{len(utts)} LibriSpeech utterances x {args.repeats} = {audio_s:.0f} s of audio; 1 thread; CPU time")
    print(f"{'case':36s} {'x real time/core':>17s} {'ms per audio s':>15s} {'vs pedalboard alone':>20s}")
    floor = dict(rows)["baseline: pedalboard Reverb alone"]
    for name, seconds in rows:
        print(f"{name:36s} {audio_s / seconds:17.0f} {1000 * seconds / audio_s:15.3f} {seconds / floor:19.2f}x")
    worst = min(audio_s / s for name, s in rows if name.startswith("chain"))
    print(f"slowest whole chain: {worst:.0f}x real time per core (target >= {TARGET:.0f}x): "
          f"{'OK' if worst >= TARGET else 'TOO SLOW'}")
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
