"""Numerical health of a pre-training run: skipped updates, the stop after too many, codebook collapse.

A non-finite loss never updates the model: the wrapper poisons it so every gradient is NaN, and ESPnet's
trainer then skips ``optimizer.step()`` (the EMA teacher and the schedules do not move). Skipped updates
(non-finite loss or gradient) are logged and reported per epoch as the stat ``nonfinite_skipped``;
``--max_nonfinite_in_a_row`` (default 10; 0: never) skipped updates in a row stop the run with advice.
With ``--use_amp true`` an fp16 gradient overflow under a finite loss is the loss scaler's normal
calibration: counted, but not toward the stop. Collapse: the model raises
:class:`~aqc.models.model.CollapseError` when the target or prediction std falls below its floor (after
``collapse_check_after`` updates); :func:`aqc.cli.run_cli` prints it with its advice. The code perplexity
(hard code usage of the quantizer) below ``--min_code_perplexity_fraction`` (default 2 %) of the
codebook (``latent_groups x latent_vars``) for ``--code_perplexity_patience`` consecutive training
batches logs a WARNING with advice (the run goes on).

Test hook: ``AQC_TEST_SIGKILL_AT=<epoch>:<iteration>`` makes the trainer SIGKILL itself after that many
iterations of that epoch (tests of the mid-epoch crash; see :mod:`aqc.checkpoints` for the resume).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import torch

from aqc.cli import AQCUserError

logger = logging.getLogger(__name__)

KILL_ENV = "AQC_TEST_SIGKILL_AT"


class NonFiniteLossError(AQCUserError):
    """Too many updates in a row skipped for a non-finite loss or gradient."""

class CodebookMonitor:
    """WARNING when the code perplexity stays below ``min_fraction`` of the codebook for ``patience``
    consecutive checks (once per episode: it warns again only after a recovery)."""

    def __init__(self, min_fraction: float = 0.02, patience: int = 10):
        self.min_fraction = float(min_fraction)
        self.patience = int(patience)
        self.low = 0
        self.warned = False
        self.warnings = 0

    def check(self, perplexity: float, codebook_size: int, num_updates: int = 0) -> bool:
        """Returns True when it warns."""
        if self.min_fraction <= 0 or self.patience <= 0 or not math.isfinite(perplexity):
            return False
        threshold = self.min_fraction * codebook_size
        if perplexity >= threshold:
            self.low = 0
            self.warned = False
            return False
        self.low += 1
        if self.low < self.patience or self.warned:
            return False
        self.warned = True
        self.warnings += 1
        logger.warning(
            f"codebook collapse? code perplexity {perplexity:.2f} < {threshold:.2f} ({100 * self.min_fraction:g} % "
            f"of the {codebook_size} codes) for {self.low} consecutive batches (update {num_updates}). The "
            "quantizer uses few codes, so the contrastive loss can fall for the wrong reason. Fix: lower the "
            "learning rate (optim_conf.lr) or lengthen the warm-up, raise model_conf.diversity_weight.")
        return True


class TrainingHealth:
    """Per-model state of the numerical checks (held by the ESPnet wrapper as ``health``)."""

    def __init__(self, max_nonfinite_in_a_row: int = 10, min_code_perplexity_fraction: float = 0.02,
                 code_perplexity_patience: int = 10):
        self.max_nonfinite_in_a_row = int(max_nonfinite_in_a_row)
        self.codebook = CodebookMonitor(min_code_perplexity_fraction, code_perplexity_patience)
        self.nonfinite_losses = 0  # training forwards with a non-finite loss, whole process
        self.skipped_in_epoch = 0
        self.in_a_row = 0

    @classmethod
    def from_args(cls, args) -> "TrainingHealth":
        return cls(getattr(args, "max_nonfinite_in_a_row", 10),
                   getattr(args, "min_code_perplexity_fraction", 0.02),
                   getattr(args, "code_perplexity_patience", 10))

    def observe(self, loss: torch.Tensor, stats: Dict[str, torch.Tensor], model) -> torch.Tensor:
        """A training forward's loss: non-finite -> every gradient NaN (the update is then skipped)."""
        if not bool(torch.isfinite(loss.detach()).all()):
            self.nonfinite_losses += 1
            loss = loss * float("nan")
        perplexity = stats.get("code_perplexity")
        config = getattr(model, "config", None)
        if perplexity is not None and config is not None and getattr(config, "use_quantizer", False):
            self.codebook.check(float(perplexity), int(config.latent_groups) * int(config.latent_vars),
                                int(getattr(model, "num_updates", 0)))
        return loss


def _kill_point() -> Optional[Tuple[int, int]]:
    value = os.environ.get(KILL_ENV)
    if not value:
        return None
    epoch, _, iteration = value.partition(":")
    return int(epoch), int(iteration)


class UpdateMonitor:
    """Wraps the training iterator handed to ESPnet's ``train_one_epoch``: after each accumulation group
    it checks whether the optimizer stepped (the model's update count moved), counts skipped updates,
    logs them, and stops after ``max_nonfinite_in_a_row`` in a row (see the module docstring)."""

    def __init__(self, iterable: Iterable, model, health: TrainingHealth, accum_grad: int, epoch: int,
                 amp: bool = False):
        self.iterable = iterable
        self.model = model  # Data2VecAQC: num_updates
        self.health = health
        self.accum_grad = max(1, int(accum_grad))
        self.epoch = int(epoch)
        self.amp = bool(amp)
        self.batches = 0

    def __len__(self) -> int:
        return len(self.iterable)

    def _settle(self, iteration: int, updates_before: int, nonfinite_before: int) -> None:
        h = self.health
        if self.model.num_updates > updates_before:
            h.in_a_row = 0
            return
        bad_loss = h.nonfinite_losses > nonfinite_before
        h.skipped_in_epoch += 1
        if bad_loss or not self.amp:
            h.in_a_row += 1
        reason = "non-finite loss" if bad_loss else (
            "fp16 gradient overflow (AMP loss scaling)" if self.amp else "non-finite gradient")
        logger.warning(f"epoch {self.epoch}, iteration {iteration}: update skipped ({reason}); "
                       f"{h.skipped_in_epoch} skipped in this epoch, {h.in_a_row} in a row")
        if h.max_nonfinite_in_a_row > 0 and h.in_a_row >= h.max_nonfinite_in_a_row:
            raise NonFiniteLossError(
                f"{h.in_a_row} updates in a row were skipped because the loss or the gradient was not finite "
                f"(epoch {self.epoch}, iteration {iteration}, update {self.model.num_updates}; "
                f"max_nonfinite_in_a_row {h.max_nonfinite_in_a_row}). Fix: lower the learning rate (optim_conf.lr) "
                "or lengthen the warm-up, enable gradient clipping (grad_clip, e.g. 10), check the data for NaN/Inf "
                "audio (utils/validate_data_dir.py), and disable AMP (--use_amp false) if it is on. --resume true "
                "continues from the last epoch's checkpoint with its optimizer state; to change the learning rate "
                "start a new --output_dir with --init_param <output_dir>/<N>epoch.pth.")

    def __iter__(self):
        kill = _kill_point()
        h = self.health
        h.skipped_in_epoch = 0
        n = 0
        updates_before, nonfinite_before = self.model.num_updates, h.nonfinite_losses
        for item in self.iterable:
            if n and n % self.accum_grad == 0:
                self._settle(n, updates_before, nonfinite_before)
                updates_before, nonfinite_before = self.model.num_updates, h.nonfinite_losses
            if kill is not None and kill == (self.epoch, n):
                logger.warning(f"{KILL_ENV}: SIGKILL at epoch {self.epoch} after {n} iteration(s)")
                for handler in logging.getLogger().handlers:
                    with contextlib.suppress(Exception):
                        handler.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            n += 1
            self.batches = n
            yield item
        if n and n % self.accum_grad == 0:
            self._settle(n, updates_before, nonfinite_before)


def report_epoch_count(reporter, key: str, value: float) -> None:
    """Put ``value`` into an ESPnet ``SubReporter`` so that the epoch's aggregate of ``key`` is exactly it
    (one value on the last step, NaN elsewhere; ``Average`` takes the nan-mean), without adding a step."""
    from espnet2.train.reporter import Average

    count = getattr(reporter, "count", 0)
    if count <= 0:
        return
    reporter.stats[key] = [Average(np.nan)] * (count - 1) + [Average(float(value))]


def report_epoch_threads(reporter) -> None:
    """The epoch's stat ``intra_op_threads``: the mean thread count its optimizer steps ran with
    (:func:`aqc.cpu_threads.take_epoch_threads`; call that once when the epoch starts, to begin the count)."""
    from aqc import cpu_threads

    threads = cpu_threads.take_epoch_threads()
    if threads is not None:
        report_epoch_count(reporter, "intra_op_threads", threads)
