"""The global batch as a setting: samples per optimizer update, whatever the number of ranks.

ESPnet's ``batch_bins`` is the whole mini-batch, split across the ranks, and ``accum_grad`` mini-batches
make one update; ``num_iters_per_epoch`` counts mini-batches. Reproducing a batch that the reference
trained on 16 GPUs therefore needs three numbers changed together for every other number of GPUs. A
config (or the command line) states the target instead::

    samples_per_update: 60800000     # reference: 16 GPUs x max_tokens 3,800,000
    batch_bins_per_rank: 3800000     # what one GPU holds per micro-batch (memory)
    updates_per_epoch: 2500          # a checkpoint and a validation every 2,500 updates

and :func:`apply_global_batch` derives, from the number of training processes (ranks)::

    batch_bins         = batch_bins_per_rank x ranks
    accum_grad         = samples_per_update / batch_bins     (a whole number, else the run is refused)
    num_iters_per_epoch = updates_per_epoch x accum_grad

so that samples per update and the number of updates (``updates_per_epoch x max_epoch``) are the same on
1, 8 or 16 GPUs. ``batch_type numel`` packs whole utterances up to ``batch_bins`` samples, so a real
mini-batch holds at most that many (one utterance's length less, at worst). ``--samples_per_update none``
turns the derivation off, to set ``batch_bins``/``accum_grad``/``num_iters_per_epoch`` by hand.

:func:`one_process_per_gpu` makes ``--ngpu N`` (N > 1) start one process per GPU (ESPnet's
``--multiprocessing_distributed true``, as its ``asr.sh`` passes) instead of ESPnet's default, a single
process with ``torch.nn.DataParallel``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import Optional

from espnet2.utils.types import int_or_none

from aqc.cli import AQCUserError

# ESPnet's own defaults (espnet2.tasks.abs_task): a value other than these was set by a config or by hand.
ESPNET_DEFAULTS = {"batch_bins": 1000000, "valid_batch_bins": None, "accum_grad": 1, "num_iters_per_epoch": None}
DERIVED = tuple(ESPNET_DEFAULTS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("global batch (aqc)")
    group.add_argument("--samples_per_update", type=int_or_none, default=None,
                       help="Audio samples per optimizer update over all ranks and accumulation steps (the "
                            "reference's GPUs x max_tokens x update_freq); derives batch_bins, accum_grad and "
                            "num_iters_per_epoch from the number of ranks. none: set those by hand")
    group.add_argument("--batch_bins_per_rank", type=int_or_none, default=None,
                       help="Samples one rank holds per micro-batch (with --samples_per_update)")
    group.add_argument("--updates_per_epoch", type=int_or_none, default=None,
                       help="Optimizer updates per epoch (a checkpoint and a validation each); with "
                            "--samples_per_update. none: one pass over the data")


def world_size(args: argparse.Namespace) -> int:
    """The number of training processes this command will run as, as ESPnet will decide it."""
    from espnet2.train.distributed_utils import get_num_nodes, get_world_size

    if args.multiprocessing_distributed:
        nodes = get_num_nodes(args.dist_world_size, args.dist_launcher) or 1
        return max(args.ngpu, 1) * nodes if args.ngpu > 1 else nodes
    return get_world_size(args.dist_world_size, args.dist_launcher)


def launched_ranks() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def one_process_per_gpu(args: argparse.Namespace) -> Optional[str]:
    """``--ngpu N`` (N > 1) in a single process: switch to one process per GPU (DDP), not DataParallel.

    Under an external launcher (torchrun, srun: ``WORLD_SIZE`` > 1) every process already is a rank and
    is left alone. Returns the log line when it switched."""
    if args.ngpu > 1 and not args.multiprocessing_distributed and launched_ranks() <= 1 \
            and args.dist_launcher is None:
        args.multiprocessing_distributed = True
        return (f"--ngpu {args.ngpu}: one training process per GPU (DistributedDataParallel; "
                "--multiprocessing_distributed true) instead of ESPnet's default, one process with DataParallel")
    return None


@dataclass(frozen=True)
class GlobalBatch:
    samples_per_update: int
    batch_bins_per_rank: int
    ranks: int
    accum_grad: int
    updates_per_epoch: Optional[int]
    max_epoch: int

    @property
    def batch_bins(self) -> int:
        return self.batch_bins_per_rank * self.ranks

    @property
    def num_iters_per_epoch(self) -> Optional[int]:
        return None if self.updates_per_epoch is None else self.updates_per_epoch * self.accum_grad

    @property
    def updates(self) -> Optional[int]:
        return None if self.updates_per_epoch is None else self.updates_per_epoch * self.max_epoch

    def describe(self, sample_rate: int = 16000) -> str:
        minutes = self.samples_per_update / sample_rate / 60
        line = (f"global batch: {self.samples_per_update:,} samples per update ({minutes:.1f} min of audio at "
                f"{sample_rate // 1000} kHz) = {self.batch_bins_per_rank:,} per rank x {self.ranks} rank(s) x "
                f"accum_grad {self.accum_grad}")
        if self.updates_per_epoch is None:
            return line + f"; {self.max_epoch} epochs over the whole training set"
        return (line + f"; {self.updates_per_epoch:,} updates per epoch x {self.max_epoch} epochs = "
                f"{self.updates:,} updates (num_iters_per_epoch {self.num_iters_per_epoch:,})")


def derive(samples_per_update: int, batch_bins_per_rank: int, ranks: int, updates_per_epoch: Optional[int],
           max_epoch: int) -> GlobalBatch:
    """The per-rank settings that give ``samples_per_update`` on ``ranks`` processes, or a user error."""
    for name, value in (("samples_per_update", samples_per_update), ("batch_bins_per_rank", batch_bins_per_rank),
                        ("ranks", ranks)):
        if value is None or value <= 0:
            raise AQCUserError(f"--{name} {value}: expected a positive number")
    if updates_per_epoch is not None and updates_per_epoch <= 0:
        raise AQCUserError(f"--updates_per_epoch {updates_per_epoch}: expected a positive number (or none)")
    batch_bins = batch_bins_per_rank * ranks
    if samples_per_update % batch_bins:
        micro_batches = samples_per_update // batch_bins_per_rank  # per update, counted over all ranks
        if samples_per_update % batch_bins_per_rank == 0:
            counts = [n for n in range(1, micro_batches + 1) if micro_batches % n == 0]
            fix = f"run on {', '.join(map(str, counts))} rank(s)"
        else:
            fix = f"set --batch_bins_per_rank to a divisor of {samples_per_update:,}"
        raise AQCUserError(
            f"--samples_per_update {samples_per_update:,} is not a whole number of mini-batches of "
            f"{batch_bins_per_rank:,} samples x {ranks} rank(s) = {batch_bins:,}: the batch cannot be matched. "
            f"Fix: {fix}")
    return GlobalBatch(samples_per_update, batch_bins_per_rank, ranks, samples_per_update // batch_bins,
                       updates_per_epoch, max_epoch)


def apply_global_batch(args: argparse.Namespace, sample_rate: int = 16000) -> Optional[GlobalBatch]:
    """Derive batch_bins, valid_batch_bins, accum_grad and num_iters_per_epoch in ``args`` when
    ``--samples_per_update`` is set (and log the result); refuse settings that contradict it."""
    if args.samples_per_update is None:
        for name in ("batch_bins_per_rank", "updates_per_epoch"):
            if getattr(args, name) is not None:
                raise AQCUserError(f"--{name} is set but --samples_per_update is not: set both (or neither)")
        return None
    if args.batch_type != "numel":
        raise AQCUserError(f"--samples_per_update needs batch_type numel (batches counted in samples), not "
                           f"{args.batch_type!r}")
    if args.batch_bins_per_rank is None:
        raise AQCUserError("--samples_per_update needs --batch_bins_per_rank (samples one rank holds per "
                           "micro-batch)")
    set_by_hand = [f"{name} {getattr(args, name)}" for name in DERIVED
                   if getattr(args, name) != ESPNET_DEFAULTS[name]]
    if set_by_hand:
        raise AQCUserError(
            f"{', '.join(set_by_hand)} and --samples_per_update {args.samples_per_update} are both set, but "
            "--samples_per_update derives them from the number of ranks. Fix: remove them from the config and "
            "command line, or pass --samples_per_update none to set them by hand")
    batch = derive(args.samples_per_update, args.batch_bins_per_rank, world_size(args), args.updates_per_epoch,
                   args.max_epoch)
    args.batch_bins = args.valid_batch_bins = batch.batch_bins
    args.accum_grad = batch.accum_grad
    args.num_iters_per_epoch = batch.num_iters_per_epoch
    check_schedule(args, batch)
    return batch


def check_schedule(args: argparse.Namespace, batch: GlobalBatch) -> None:
    """A schedule sized in updates must span the updates the run will make."""
    if batch.updates is None:
        return
    max_steps = (getattr(args, "scheduler_conf", None) or {}).get("max_steps")
    if max_steps is not None and max_steps != batch.updates:
        raise AQCUserError(
            f"scheduler_conf max_steps {max_steps:,} differs from the {batch.updates:,} updates of this run "
            f"(updates_per_epoch {batch.updates_per_epoch:,} x max_epoch {batch.max_epoch}). Fix: make them equal")


def prepare_distributed_run(args: argparse.Namespace, sample_rate: int = 16000) -> Optional[GlobalBatch]:
    """What both training entry points do before ESPnet starts: DDP for ``--ngpu N``, the global batch
    (logged by :func:`log_global_batch` once training has started)."""
    if args.ngpu == 0 and args.dist_backend == "nccl":
        args.dist_backend = "gloo"  # NCCL needs GPUs; used only if the run is distributed (CPU ranks)
    switched = one_process_per_gpu(args)
    if switched:
        print(switched, file=sys.stderr, flush=True)
    return apply_global_batch(args, sample_rate)


def log_global_batch(args: argparse.Namespace, sample_rate: int = 16000) -> str:
    """Log the batch of this run in the training log (called where ESPnet has set up logging and the
    process group: the task's build_model); returns the line."""
    import torch.distributed as dist

    if not all(hasattr(args, name) for name in ("batch_type", "batch_bins", "accum_grad", "max_epoch")):
        return ""  # a model built outside training (a namespace without the trainer's options)
    distributed = dist.is_available() and dist.is_initialized()
    ranks = dist.get_world_size() if distributed else 1
    if getattr(args, "samples_per_update", None) is not None:
        line = GlobalBatch(args.samples_per_update, args.batch_bins_per_rank, ranks, args.accum_grad,
                           args.updates_per_epoch, args.max_epoch).describe(sample_rate)
    else:
        line = describe_by_hand(args, ranks)
    if not distributed or dist.get_rank() == 0:
        logging.info(line)
    return line


def describe_by_hand(args: argparse.Namespace, ranks: int) -> str:
    """The batch of a config that sets batch_bins/batch_size and accum_grad itself."""
    if args.batch_type in ("numel", "length"):
        size = f"batch_bins {args.batch_bins:,} ({args.batch_type})"
        per_update = (f" = {args.batch_bins * args.accum_grad:,} samples per update"
                      if args.batch_type == "numel" else "")
    else:
        size = f"batch_size {args.batch_size} utterances ({args.batch_type})"
        per_update = f" = {args.batch_size * args.accum_grad} utterances per update"
    line = (f"global batch: set by hand: {size} x accum_grad {args.accum_grad}{per_update}, split over {ranks} "
            "rank(s)")
    if args.num_iters_per_epoch is not None:
        per_epoch = args.num_iters_per_epoch // args.accum_grad
        line += f"; {per_epoch:,} updates per epoch x {args.max_epoch} epochs = {per_epoch * args.max_epoch:,} updates"
    return line


def main(argv=None) -> None:
    """``python -m aqc.espnet.global_batch --task ssl --ranks 8 --config conf/pretrain_base.yaml [OPTIONS]``:
    print the batch a training config gives on that many ranks (recipes' dry runs)."""
    from aqc.cli import run_cli

    run_cli(_main, argv)


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--task", choices=["ssl", "asr"], required=True)
    parser.add_argument("--ranks", type=int, required=True)
    ours, rest = parser.parse_known_args(argv)
    if ours.task == "ssl":
        from .ssl import AQCSSLTask as task
    else:
        from .asr_task import AQCASRTask as task
    args = task.get_parser().parse_args(rest)
    args.ngpu, args.multiprocessing_distributed = ours.ranks, ours.ranks > 1
    sample_rate = getattr(args, "sample_rate", 16000)
    batch = apply_global_batch(args, sample_rate)
    print(batch.describe(sample_rate) if batch is not None else describe_by_hand(args, ours.ranks), file=sys.stderr)


if __name__ == "__main__":
    main()
