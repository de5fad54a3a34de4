"""A downstream probe inside pre-training (:mod:`aqc.probe`), run by :class:`aqc.espnet.ssl.AQCTrainer`.

With ``--probe_train_data DIR --probe_dev_data DIR`` (labelled Kaldi-style dirs: a recipe passes its
fine-tuning train and dev sets), after validation of every ``probe_conf.every_epochs``-th epoch (and the
last) the student's frozen features are probed layer by layer. The scores go to ESPnet's reporter as
validation stats, so they appear in the epoch log, tensorboard and the PNG plots (``images/probe_err.png``):

* ``probe_err``: the error of the best layer (label error rate, or character error rate for ``ctc``);
* ``probe_layer``: that layer; ``probe_err_l<i>``: each layer's error; ``probe_time``: seconds taken.

``[valid, probe_err, min]`` is added to ``best_model_criterion`` when missing, so ESPnet keeps the
best-probed epoch's checkpoint (``keep_nbest_models``) and links it as ``valid.probe_err.best.pth``;
``aqc.bin.export_model --select probe`` exports it. Each probe also appends a line to
``<output_dir>/probe/scores.jsonl`` (epoch, update, per-layer errors, seconds, and the share of the wall
time since the previous probe it took). Checkpoints exist only at epoch ends, so the probe runs there; the
number of updates between probes is ``num_iters_per_epoch x every_epochs / accum_grad``.

Distributed runs: rank 0 probes while the other ranks wait; the result is broadcast so every rank's
reporter holds the same values. The probe never changes the weights or the random streams of the run.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import str_or_none

from aqc.cli import AQCUserError
from aqc.probe import Probe, ProbeConfig, ProbeResult, labelled_dir_problem

CRITERION = ["valid", "probe_err", "min"]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--probe_train_data", type=str_or_none, default=None,
                       help="A labelled data dir (wav.scp, text) the probe fits on, e.g. dump/<finetune_set>; "
                            "with --probe_dev_data it switches the probe on (aqc.espnet.training_probe)")
    group.add_argument("--probe_dev_data", type=str_or_none, default=None,
                       help="The labelled data dir the probe scores, e.g. dump/<valid_set>")
    group.add_argument("--probe_conf", action=NestedDictAction, default=dict(),
                       help="aqc.probe.ProbeConfig options: task (auto|classify|ctc), every_epochs, "
                            "max_utterances, max_seconds, l2, ctc_steps, ctc_batch_size, ctc_lr, seed")


def prepare_args(args: argparse.Namespace) -> None:
    """Check the probe options before training starts; add the probe's checkpoint criterion."""
    train, dev = getattr(args, "probe_train_data", None), getattr(args, "probe_dev_data", None)
    if bool(train) != bool(dev):
        raise AQCUserError("give both --probe_train_data and --probe_dev_data (or neither: no probe)")
    try:
        ProbeConfig.from_dict(getattr(args, "probe_conf", None))
    except ValueError as e:
        raise AQCUserError(str(e)) from None
    if not train:
        return
    for option, path in (("--probe_train_data", train), ("--probe_dev_data", dev)):
        problem = labelled_dir_problem(path)
        if problem:
            raise AQCUserError(f"{option} {problem}")
    criteria = [list(c) for c in (args.best_model_criterion or [])]
    if CRITERION not in criteria:  # said by describe() (logging before ESPnet configures it would mute ESPnet's log)
        args.best_model_criterion = criteria + [CRITERION]


def describe(args: argparse.Namespace) -> Optional[str]:
    """One line on the probe of this run, for the training log."""
    if not getattr(args, "probe_train_data", None):
        return None
    config = ProbeConfig.from_dict(args.probe_conf)
    return (f"probe: fits on {args.probe_train_data}, scores {args.probe_dev_data} after every "
            f"{config.every_epochs} epoch(s) and the last (task {config.task}); best_model_criterion "
            f"{args.best_model_criterion} keeps the best-probed checkpoint")


def _rank(distributed: bool) -> int:
    return torch.distributed.get_rank() if distributed else 0


class TrainingProbe:
    """The probe of one training run: built on first use (rank 0 reads the audio), run after validation."""

    def __init__(self, train_dir: str, dev_dir: str, conf: Optional[Dict], output_dir: Path):
        self.train_dir, self.dev_dir = train_dir, dev_dir
        self.config = ProbeConfig.from_dict(conf)
        self.output_dir = Path(output_dir)
        self.probe: Optional[Probe] = None
        self.since = time.perf_counter()

    @classmethod
    def from_options(cls, options) -> Optional["TrainingProbe"]:
        if not getattr(options, "probe_train_data", None):
            return None
        return cls(options.probe_train_data, options.probe_dev_data, options.probe_conf, options.output_dir)

    def due(self, epoch: int, max_epoch: int) -> bool:
        return epoch % self.config.every_epochs == 0 or epoch == max_epoch

    def _score(self, model) -> Dict:
        if self.probe is None:
            self.probe = Probe.from_dirs(self.train_dir, self.dev_dir, self.config)
            logging.info(f"probe: {self.probe.task} on {len(self.probe.train.keys)} utterances of {self.train_dir}, "
                         f"scored on {len(self.probe.dev.keys)} of {self.dev_dir}")
        return self.probe(model).to_dict()

    @staticmethod
    def report_not_probed(reporter) -> None:
        """An epoch between probes (``every_epochs`` > 1) reports ``probe_err`` as infinity: ESPnet's
        checkpoint criterion reads the key in every epoch (without it the run stops with a KeyError after
        the first probe), and a value that is never the minimum keeps an unprobed epoch from being chosen
        as the best-probed one."""
        from .training_health import report_epoch_count

        report_epoch_count(reporter, "probe_err", float("inf"))

    def run(self, model, reporter, epoch: int, distributed: bool) -> Optional[ProbeResult]:
        """Probe ``model`` (the aqc model, unwrapped) and report into ``reporter`` (the valid sub-reporter)."""
        from .training_health import report_epoch_count

        outcome: List[Optional[Dict]] = [None]
        if _rank(distributed) == 0:
            try:
                outcome[0] = {"result": self._score(model)}
            except Exception as e:  # noqa: BLE001 - the other ranks must hear about it, not hang
                outcome[0] = {"error": f"{type(e).__name__}: {e}"}
        if distributed:
            torch.distributed.broadcast_object_list(outcome, src=0)
        if "error" in outcome[0]:
            raise AQCUserError(f"probe failed at epoch {epoch}: {outcome[0]['error']}")
        result = ProbeResult(**outcome[0]["result"])
        now = time.perf_counter()
        share = result.seconds / max(now - self.since, 1e-9)
        self.since = now
        report_epoch_count(reporter, "probe_err", result.best_error)
        report_epoch_count(reporter, "probe_layer", result.best_layer)
        report_epoch_count(reporter, "probe_time", result.seconds)
        for layer, error in enumerate(result.layer_errors):
            report_epoch_count(reporter, f"probe_err_l{layer}", error)
        logging.info(f"probe, epoch {epoch} (update {result.num_updates}): {result.summary()}, "
                     f"{100 * share:.1f} % of the time since the previous probe")
        if _rank(distributed) == 0:
            write_score(self.output_dir / "probe" / "scores.jsonl",
                        {"epoch": epoch, **result.to_dict(), "share_of_time": share})
        return result


def write_score(path: Path, row: Dict) -> None:
    """Append ``row``; a row of the same epoch (a resumed run redoing it) is replaced."""
    rows = [r for r in read_scores(path) if r.get("epoch") != row["epoch"]] + [row]
    rows.sort(key=lambda r: r["epoch"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def read_scores(path: Path) -> List[Dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise ValueError(f"{path}:{number}: not a JSON line; remove the line or the file (the probe "
                                     "rewrites it on the next run)") from None
    return rows
