"""ESPnet's ASR task with aqc's plug-ins, in every process it starts.

ESPnet's ``--ngpu N`` with ``--multiprocessing_distributed true`` spawns one process per GPU, which
imports only the module that defines the task class. ``ASRTask`` lives in ESPnet, so a spawned rank would
know neither ``frontend: aqc`` nor aqc's checkpoint rules; :class:`AQCASRTask` lives here, and importing
this module registers both (:func:`aqc.espnet.frontend.register`).

What it adds to ESPnet's task:

* the global batch as a setting (``--samples_per_update``, :mod:`aqc.espnet.global_batch`), and one
  process per GPU for ``--ngpu N`` instead of DataParallel;
* ``wer_ctc`` in the validation statistics of a CTC model (ESPnet reports only ``cer_ctc`` without an
  attention decoder), so ``best_model_criterion`` can select by word error rate as the reference does
  (``best_checkpoint_metric: wer``): :func:`report_ctc_wer`;
* ``intra_op_threads`` in each epoch's training statistics (:mod:`aqc.cpu_threads`): whether the run can
  be repeated bit for bit.
"""
from __future__ import annotations

import argparse
import dataclasses
from itertools import groupby
from typing import List, Optional, Sequence

import torch
from espnet2.tasks.asr import ASRTask
from espnet2.train.trainer import Trainer, TrainerOptions
from espnet2.utils.build_dataclass import build_dataclass

from aqc import cpu_threads

from . import epoch_plots
from .frontend import register
from .global_batch import add_arguments as add_global_batch_arguments
from .global_batch import log_global_batch, prepare_distributed_run
from .training_health import report_epoch_threads

register()

WORD_BOUNDARIES = ("<space>", "\u2581")  # ESPnet char tokens; sentencepiece's word-start mark


class CTCWordErrorRate:
    """Word error rate of greedy CTC output (frame argmax ids) against padded reference ids."""

    def __init__(self, token_list: Sequence[str], blank_id: int = 0, ignore_id: int = -1,
                 word_tokens: bool = False):
        self.token_list = list(token_list)
        self.blank_id = blank_id
        self.ignore_id = ignore_id
        self.word_tokens = word_tokens  # token_type word: each token is a word, no boundary token

    def words(self, ids) -> List[str]:
        if self.word_tokens:
            return [self.token_list[i] for i in ids]
        text = "".join(self.token_list[i] for i in ids)
        for boundary in WORD_BOUNDARIES:
            text = text.replace(boundary, " ")
        return text.split()

    def __call__(self, ys_hat: torch.Tensor, ys_pad: torch.Tensor) -> Optional[float]:
        import editdistance

        errors = ref_words = 0
        for hat, ref in zip(ys_hat.tolist(), ys_pad.tolist()):
            hyp_ids = [i for i, _ in groupby(hat) if i != self.blank_id and i != self.ignore_id]
            ref_ids = [i for i in ref if i != self.ignore_id]
            ref_list = self.words(ref_ids)
            errors += editdistance.eval(self.words(hyp_ids), ref_list)
            ref_words += len(ref_list)
        return errors / ref_words if ref_words else None


class _WithWordErrors:
    """ESPnet's error calculator, which also keeps the word error rate of its last CTC call."""

    def __init__(self, inner, wer: CTCWordErrorRate):
        self.inner = inner
        self.wer = wer
        self.last_wer: Optional[float] = None

    def __call__(self, ys_hat, ys_pad, is_ctc: bool = False):
        if is_ctc:
            self.last_wer = self.wer(ys_hat, ys_pad)
        return self.inner(ys_hat, ys_pad, is_ctc=is_ctc)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def report_ctc_wer(model: torch.nn.Module, token_type: Optional[str] = None) -> bool:
    """Add ``wer_ctc`` to a CTC model's validation stats (where ESPnet computes ``cer_ctc``) when its
    config asks for word error rates (``model_conf.report_wer``)."""
    calculator = getattr(model, "error_calculator", None)
    if calculator is None or getattr(model, "ctc", None) is None or not getattr(calculator, "report_wer", False):
        return False
    wer = CTCWordErrorRate(model.token_list, model.blank_id, model.ignore_id, word_tokens=token_type == "word")
    errors = _WithWordErrors(calculator, wer)
    model.error_calculator = errors

    def add_wer(module, inputs, output):
        wer, errors.last_wer = errors.last_wer, None
        if module.training or wer is None:
            return output
        loss, stats, weight = output
        stats["wer_ctc"] = torch.tensor([wer], dtype=torch.float, device=loss.device)
        return loss, stats, weight

    model.register_forward_hook(add_wer)
    return True


@dataclasses.dataclass
class AQCASRTrainerOptions(TrainerOptions):
    plot_every_epochs: int


class AQCASRTrainer(Trainer):
    """ESPnet's trainer; each epoch's training stats also hold ``intra_op_threads``, and
    ``--plot_every_epochs`` sets how often the images are drawn (:mod:`aqc.espnet.epoch_plots`)."""

    @classmethod
    def build_options(cls, args: argparse.Namespace) -> AQCASRTrainerOptions:
        return build_dataclass(AQCASRTrainerOptions, args)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser):
        epoch_plots.add_argument(parser.add_argument_group("aqc trainer related"))

    @classmethod
    def run(cls, **kwargs) -> None:  # ESPnet passes every argument by name
        with epoch_plots.plotting_every(kwargs["trainer_options"].plot_every_epochs):
            return super().run(**kwargs)

    @classmethod
    def train_one_epoch(cls, **kwargs) -> bool:
        cpu_threads.take_epoch_threads()  # the count starts with the epoch
        result = super().train_one_epoch(**kwargs)
        report_epoch_threads(kwargs["reporter"])
        return result


class AQCASRTask(ASRTask):
    """ESPnet's ASR task; see the module docstring for what it adds."""

    trainer = AQCASRTrainer

    @classmethod
    def get_parser(cls) -> argparse.ArgumentParser:
        parser = super().get_parser()
        add_global_batch_arguments(parser)
        cpu_threads.add_argument(parser)
        return parser

    @classmethod
    def main(cls, args: Optional[argparse.Namespace] = None, cmd: Optional[Sequence[str]] = None):
        if args is None:
            args = cls.get_parser().parse_args(cmd)
        if not args.print_config:
            prepare_distributed_run(args)
        return super().main(args=args)

    @classmethod
    def build_model(cls, args: argparse.Namespace):
        model = super().build_model(args)
        cpu_threads.start_for_training(getattr(args, "num_threads", None))  # in every rank
        report_ctc_wer(model, getattr(args, "token_type", None))
        log_global_batch(args)
        return model
