"""data2vec-aqc pre-training on ESPnet's own machinery: model wrapper, task and trainer.

Registration. ESPnet has no plug-in hook: its tasks look classes up in module-level ``ClassChoices``.
Importing this module adds :class:`ESPnetAQCModel` as ``model: aqc`` to ``espnet2.tasks.ssl.model_choices``
(:func:`register`, idempotent). ESPnet's ``SSLTask`` itself is HuBERT-specific (it requires a token list,
builds a frontend/encoder/HuBERT loss and uses HuBERT's collate and text preprocessor), so
:class:`AQCSSLTask` subclasses it and replaces exactly those parts; everything else is ESPnet's: argument
parsing and ``--config``, the iterators and batch samplers, optimizers and schedulers, ``Trainer`` (AMP,
gradient accumulation, clipping, checkpoints, ``--resume``, reporter, tensorboard, PNG plots), and the
distributed launcher. ``python -m aqc.bin.ssl_train`` runs ``AQCSSLTask.main()``.

What the task changes, and why:

* ``build_model``: ``model: aqc`` only; ``model_conf`` is ``preset: tiny|base`` plus
  :class:`aqc.models.Data2VecAQCConfig` overrides. The wrapper holds the model as ``aqc`` (checkpoint keys
  ``aqc.*``; :func:`aqc.models.io.load_model_file` reads them with the experiment's ``config.yaml``).
* ``build_collate_fn``: :class:`aqc.espnet.collate.AQCCollateFn` (clean + augmented views, crop, drop of
  short utterances). Options: ``collate_fn_conf`` (``max_sample_size``, ``min_sample_size``, ``pad``,
  ``normalize``) and ``augmentation_conf`` (:mod:`aqc.augment`; training split only). With
  ``--collect_stats true`` ESPnet's plain padding collate (after a down-mix) is used instead, so the
  shape files hold each utterance's full length (at the file's own rate).
* ``build_preprocess_fn``: none (no text; augmentation runs in the collate).
* ``build_dataset``: the sample-rate rule (``sample_rate``, default 16000; ``resample``, default false:
  reject a file at another rate with its name; true: resample it when read). Applies to the default
  ``--iterator_type sequence``.
* ``build_optimizers``: ESPnet's optimizer plus a ``register_step_post_hook`` that calls
  ``model.update_teacher(num_updates + 1)``: the EMA teacher, the EMA-decay and Gumbel-temperature
  schedules advance exactly once per real optimizer update. ESPnet skips ``optimizer.step()`` when the
  gradient norm is not finite (and ``GradScaler.step`` skips it on fp16 overflow), so skipped updates are
  not counted; with ``accum_grad`` N, N micro-batches make one update. The count lives in the model's
  state dict (``aqc._extra_state``), the teacher is ``aqc.teacher.*``: checkpoints and ``--resume`` carry
  both.
* ``trainer``: :class:`AQCTrainer`, ESPnet's ``Trainer`` with per-epoch seeding of the collate (epoch,
  rank), rank-specific torch seeds in distributed runs (masks, dropout, Gumbel noise differ across
  ranks; rank 0 keeps ESPnet's ``seed + epoch``), skipping of empty batches with a per-epoch count of
  dropped utterances, a per-epoch check that every rank holds identical student and teacher weights
  (``--check_rank_consistency``, distributed runs only; writes ``rank_consistency.json``), and n-best
  checkpoint averaging that tolerates the model's non-tensor state entry (ESPnet's adds it and fails),
  and, with ``--probe_train_data``/``--probe_dev_data``, a downstream probe of the frozen student after
  validation whose scores are validation stats (``probe_err``; :mod:`aqc.espnet.training_probe`).

Reliability: a pre-flight before ESPnet starts (:mod:`aqc.espnet.preflight`: configuration keys and
types, noise lists, data lists, every audio file's header, a readable ``checkpoint.pth`` for
``--resume``); unusable audio skipped and counted (:mod:`aqc.espnet.audio_guard`); checkpoints loaded
without running code from them and written atomically (:mod:`aqc.checkpoints`,
:mod:`aqc.espnet.checkpoint_io`); non-finite losses skipped and counted (``nonfinite_skipped``),
``--max_nonfinite_in_a_row`` of them stop the run, a code-perplexity collapse warning
(:mod:`aqc.espnet.training_health`).

Resuming. ESPnet checkpoints once per epoch (``checkpoint.pth``: model, optimizer, scheduler, reporter,
AMP scaler) and reseeds every RNG with ``seed + epoch`` at each epoch start; the collate's generators are
keyed by the epoch. So ``--resume true`` continues bit-for-bit (fixed seed, CPU, same worker count, a fixed
thread count: ``AQC_NUM_THREADS=N``, since by default it follows the machine's load); a run
killed in the middle of an epoch redoes that epoch from its start (``--num_iters_per_epoch`` sets the
spacing of checkpoints).

Multi-process. GPUs: ``--ngpu N`` starts one process per GPU (ESPnet's ``--multiprocessing_distributed``,
switched on by :mod:`aqc.espnet.global_batch` when missing, never DataParallel; ``--dist_launcher
slurm|mpi`` as usual) or ``torchrun --nproc_per_node N -m aqc.bin.ssl_train --ngpu 1 ...`` (under
torchrun, ``--multiprocessing_distributed`` is switched off so each rank takes its ``LOCAL_RANK`` GPU).
CPU: ESPnet spawns processes only per GPU, so use torchrun's environment (``--ngpu 0``; the backend
defaults to gloo when ``--ngpu 0``)::

    torchrun --standalone --nproc_per_node 2 -m aqc.bin.ssl_train --ngpu 0 --config conf.yaml ...

Note that ESPnet's ``batch_bins``/``batch_size`` is the global mini-batch, split across the ranks;
``--samples_per_update`` states the batch per update instead and derives ``batch_bins``, ``accum_grad`` and
``num_iters_per_epoch`` from the number of ranks (:mod:`aqc.espnet.global_batch`).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple

import numpy as np
import torch
from espnet2.tasks.ssl import SSLTask, model_choices
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.dataset import AdapterForSoundScpReader
from espnet2.train.trainer import Trainer, TrainerOptions
from espnet2.utils.build_dataclass import build_dataclass
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import str2bool, str_or_none

from aqc import cpu_threads
from aqc.checkpoints import atomic_save, checkpoint_errors, discard_partial_saves, load_checkpoint
from aqc.cli import AQCUserError
from aqc.models import Data2VecAQC
from aqc.models.config import Data2VecAQCConfig
from aqc.models.io import config_from_model_conf

from . import checkpoint_io, epoch_plots
from .audio_guard import AudioGuard
from .collate import AQCCollateFn, MonoCollateFn, SampleRateGuard, min_samples_for
from .global_batch import add_arguments as add_global_batch_arguments
from .global_batch import log_global_batch, prepare_distributed_run
from .preflight import check_collate_conf, dataclass_defaults, preflight_ssl
from .training_health import TrainingHealth, UpdateMonitor, report_epoch_count, report_epoch_threads
from .training_probe import TrainingProbe
from .training_probe import add_arguments as add_probe_arguments
from .training_probe import describe as describe_probe
from .training_probe import prepare_args as prepare_probe_args
from .warm_start import warm_start

MODEL_NAME = "aqc"


# ============================================================================================ model
class ESPnetAQCModel(AbsESPnetModel):
    """ESPnet wrapper of :class:`aqc.models.Data2VecAQC` (held as ``self.aqc``).

    ``model_conf`` is passed as keyword arguments: ``preset`` (``base`` or ``tiny``) and any
    :class:`aqc.models.Data2VecAQCConfig` field.
    """

    def __init__(self, preset: str = "base", **overrides: Any):
        super().__init__()
        self.aqc = Data2VecAQC(config_from_model_conf({"preset": preset, **overrides}))
        self.health = TrainingHealth()  # the task sets it from the trainer options

    @classmethod
    def option_defaults(cls) -> Dict[str, Any]:
        """``model_conf`` options and their defaults (the configuration checks read them)."""
        return {"preset": "base", **dataclass_defaults(Data2VecAQCConfig)}

    def forward(self, speech: torch.Tensor, speech_lengths: Optional[torch.Tensor] = None,
                speech_aug: Optional[torch.Tensor] = None, speech_teacher: Optional[torch.Tensor] = None,
                **kwargs: Any) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        """speech: the clean view (B, L); speech_aug: the augmented view (absent without augmentation,
        e.g. validation: then the clean view is used). Returns ESPnet's (loss, stats, weight); the
        weight is the number of masked frames, so ranks and batches are averaged per masked frame."""
        augmented = speech if speech_aug is None else speech_aug
        teacher_input = None
        if self.aqc.config.teacher_view == "augmented":
            teacher_input = speech if speech_teacher is None else speech_teacher
        loss, stats = self.aqc(speech, augmented, speech_lengths, teacher_input=teacher_input)
        if self.training:  # a non-finite loss must not update the model (TrainingHealth)
            loss = self.health.observe(loss, stats, self.aqc)
        weight = stats["masked_frames"].detach()
        loss, stats, weight = force_gatherable((loss, dict(stats), weight), loss.device)
        return loss, stats, weight

    def collect_feats(self, speech: torch.Tensor, speech_lengths: Optional[torch.Tensor] = None,
                      **kwargs: Any) -> Dict[str, torch.Tensor]:
        """Nothing to normalise globally: the waveform model normalises each utterance itself."""
        return {}


def register() -> None:
    """Add ``model: aqc`` to ESPnet's SSL task (``espnet2.tasks.ssl.model_choices``), and route ESPnet's
    checkpoint loading and saving through aqc's rules (:mod:`aqc.espnet.checkpoint_io`); idempotent."""
    model_choices.classes[MODEL_NAME] = ESPnetAQCModel
    checkpoint_io.install()


register()


# ================================================================================= teacher update
class TeacherUpdateHook:
    """``optimizer.register_step_post_hook`` callback: one EMA-teacher update per optimizer step."""

    def __init__(self, model: Data2VecAQC):
        self.model = model

    def __call__(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        self.model.update_teacher(self.model.num_updates + 1)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP / DataParallel wrappers."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


# ======================================================================================= trainer
@dataclasses.dataclass
class AQCTrainerOptions(TrainerOptions):
    check_rank_consistency: bool
    probe_train_data: Optional[str]
    probe_dev_data: Optional[str]
    probe_conf: dict
    plot_every_epochs: int


class _BatchFilter:
    """Iterates a data loader, removes ``dropped_utterances`` and ``bad_audio`` from each batch (counting
    them) and skips empty batches (every utterance too short or unusable)."""

    def __init__(self, iterable, mode: str):
        self.iterable = iterable
        self.mode = mode
        self.dropped = 0
        self.bad = 0
        self.empty = 0

    def __len__(self) -> int:
        return len(self.iterable)

    def __iter__(self):
        for keys, batch in self.iterable:
            dropped = batch.pop("dropped_utterances", None)
            if dropped is not None:
                self.dropped += int(dropped.sum())
            bad = batch.pop("bad_audio", None)
            if bad is not None:
                self.bad += int(bad.sum())
            if len(keys) == 0:
                self.empty += 1
                continue
            yield keys, batch

    def summary(self, epoch: int, min_samples: Optional[int]) -> str:
        return (f"[{self.mode}] epoch {epoch}: skipped {self.bad} utterance(s) with unusable audio (named in "
                f"the warnings above); dropped {self.dropped} utterance(s) shorter than {min_samples} samples; "
                f"skipped {self.empty} batch(es) left empty")

    def log_summary(self, epoch: int, min_samples: Optional[int]) -> None:
        if self.dropped or self.empty or self.bad:
            logging.warning(self.summary(epoch, min_samples))


def _prepare_epoch(iterator, epoch: int, distributed: bool) -> Optional[int]:
    """Tell the collate object the epoch and rank (before the loader's workers start)."""
    collate = getattr(iterator, "collate_fn", None)
    if not isinstance(collate, AQCCollateFn):
        return None
    rank = torch.distributed.get_rank() if distributed else 0
    collate.set_epoch(epoch, rank)
    return collate.min_sample_size


def _fingerprint(tensors) -> str:
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_fingerprints(model: torch.nn.Module) -> Dict[str, Any]:
    """sha256 of the student's and of the teacher's weights, and the update count."""
    model = unwrap(model)
    aqc = model.aqc if hasattr(model, "aqc") else model
    state = {k: v for k, v in aqc.state_dict().items() if isinstance(v, torch.Tensor)}
    names = sorted(state)
    return {
        "student": _fingerprint((n, state[n]) for n in names if not n.startswith("teacher.")),
        "teacher": _fingerprint((n, state[n]) for n in names if n.startswith("teacher.")),
        "num_updates": int(aqc.num_updates),
    }


def check_rank_consistency(model: torch.nn.Module, output_dir: Path, epoch: int) -> List[Dict[str, Any]]:
    """All ranks compare weight fingerprints; rank 0 writes ``rank_consistency.json``; raise on mismatch."""
    mine = model_fingerprints(model)
    everyone: List[Optional[Dict[str, Any]]] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, mine)
    rank = torch.distributed.get_rank()
    if rank == 0:
        report = {"epoch": epoch, "ranks": [{"rank": r, **f} for r, f in enumerate(everyone)]}
        with open(Path(output_dir) / "rank_consistency.json", "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    for key in ("student", "teacher", "num_updates"):
        values = {f[key] for f in everyone}
        if len(values) != 1:
            raise RuntimeError(
                f"epoch {epoch}: the ranks hold different {key} "
                f"{'weights' if key != 'num_updates' else 'update counts'} ({[f[key] for f in everyone]}). "
                "The teacher must stay identical across ranks: check that every rank runs the same "
                "configuration and that nothing updates the model outside the optimizer step.")
    return everyone


@torch.no_grad()
def average_nbest_models(output_dir: Path, reporter, best_model_criterion, nbest, suffix: Optional[str] = None,
                         use_deepspeed: bool = False) -> None:
    """ESPnet's ``average_nbest_models`` for state dicts with non-tensor entries.

    ESPnet's version adds and divides every entry, and so fails on the model's extra state (the update
    count, a dict). Here tensors are averaged (integer tensors accumulated) exactly as ESPnet does, and
    any other entry is taken from the best of the averaged models. Same files and links as ESPnet:
    ``<phase>.<criterion>.ave_<n>best[.<suffix>].pth`` and ``<phase>.<criterion>.ave[.<suffix>].pth``.
    """
    nbests = [nbest] if isinstance(nbest, int) else list(nbest) or [1]
    suffix = "" if suffix is None else suffix + "."
    output_dir = Path(output_dir)
    loaded: Dict[int, Dict[str, Any]] = {}
    for ph, cr, mode in best_model_criterion:
        if not reporter.has(ph, cr):
            continue
        epoch_and_values = reporter.sort_epochs_and_values(ph, cr, mode)[: max(nbests)]
        usable = [n for n in nbests if 0 < n <= len(epoch_and_values)] or [1]
        for n in usable:
            if n == 1:
                best_epoch = epoch_and_values[0][0]
                op = output_dir / f"{ph}.{cr}.ave_1best.{suffix}pth"
                if op.is_symlink() or op.exists():
                    op.unlink()
                op.symlink_to(f"{best_epoch}epoch.pth")
                continue
            op = output_dir / f"{ph}.{cr}.ave_{n}best.{suffix}pth"
            logging.info(f'Averaging {n}best models: criterion="{ph}.{cr}": {op}')
            states = []
            for e, _ in epoch_and_values[:n]:
                if e not in loaded:
                    loaded[e] = load_checkpoint(output_dir / f"{e}epoch.pth")
                states.append(loaded[e])
            avg = {}
            for k, best in states[0].items():
                if not isinstance(best, torch.Tensor):
                    avg[k] = best
                    continue
                total = sum(s[k] for s in states[1:]) + best
                avg[k] = total if str(total.dtype).startswith("torch.int") else total / n
            atomic_save(avg, op)
        link = output_dir / f"{ph}.{cr}.ave.{suffix}pth"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f"{ph}.{cr}.ave_{max(usable)}best.{suffix}pth")


class AQCTrainer(Trainer):
    """ESPnet's ``Trainer`` with aqc's per-epoch data seeding, empty-batch skipping, rank checks and the
    downstream probe after validation (:mod:`aqc.espnet.training_probe`)."""

    _probe: Optional[TrainingProbe] = None

    @classmethod
    def training_probe(cls, options) -> Optional[TrainingProbe]:
        """This run's probe (None without probe data); made once, when training starts."""
        if cls._probe is None or cls._probe.output_dir != Path(options.output_dir):
            cls._probe = TrainingProbe.from_options(options)
        return cls._probe

    @classmethod
    def build_options(cls, args: argparse.Namespace) -> AQCTrainerOptions:
        return build_dataclass(AQCTrainerOptions, args)

    @classmethod
    def run(cls, **kwargs) -> None:  # ESPnet passes every argument by name
        # Trainer.run averages the n-best checkpoints through the module-level average_nbest_models;
        # use the version that keeps the model's update count (a non-tensor state entry), for this run only.
        import espnet2.train.trainer as espnet_trainer

        original = espnet_trainer.average_nbest_models
        espnet_trainer.average_nbest_models = average_nbest_models
        try:
            with epoch_plots.plotting_every(kwargs["trainer_options"].plot_every_epochs):
                return super().run(**kwargs)
        finally:
            espnet_trainer.average_nbest_models = original

    @staticmethod
    def resume(checkpoint, model, reporter, optimizers, schedulers, scaler, ngpu: int = 0, strict: bool = True):
        """ESPnet's resume; a leftover ``*.pth.tmp`` (an interrupted save) is removed, and an unreadable or
        mismatching ``checkpoint.pth`` stops with one message (:class:`aqc.checkpoints.CheckpointError`)."""
        discard_partial_saves(Path(checkpoint).parent)
        with checkpoint_errors(Path(checkpoint)):
            Trainer.resume(checkpoint=checkpoint, model=model, reporter=reporter, optimizers=optimizers,
                           schedulers=schedulers, scaler=scaler, ngpu=ngpu, strict=strict)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group("aqc trainer related")
        group.add_argument("--check_rank_consistency", type=str2bool, default=True,
                           help="Distributed runs: after every epoch, check that all ranks hold identical "
                                "student and teacher weights (sha256), write rank_consistency.json, and "
                                "stop on a mismatch")
        group.add_argument("--max_nonfinite_in_a_row", type=int, default=10,
                           help="Stop the run after this many optimizer updates in a row skipped for a "
                                "non-finite loss or gradient (0: never stop); every skip is logged and "
                                "counted in the stat nonfinite_skipped")
        group.add_argument("--min_code_perplexity_fraction", type=float, default=0.02,
                           help="Warn when the quantizer's code perplexity stays below this fraction of the "
                                "codebook (latent_groups x latent_vars) for --code_perplexity_patience "
                                "consecutive training batches (0: no warning)")
        group.add_argument("--code_perplexity_patience", type=int, default=10,
                           help="Consecutive low-perplexity batches before the codebook warning")
        add_probe_arguments(group)
        epoch_plots.add_argument(group)

    @classmethod
    def train_one_epoch(cls, model, iterator, optimizers, schedulers, scaler, reporter, summary_writer,
                        options, distributed_option) -> bool:
        epoch = reporter.get_epoch()
        distributed = distributed_option.distributed
        cls.training_probe(options)  # its clock starts with training
        min_samples = _prepare_epoch(iterator, epoch, distributed)
        if distributed and torch.distributed.get_rank() > 0:
            # ESPnet seeds every rank with seed + epoch: the same masks, dropout and Gumbel noise on all
            # ranks. Give the other ranks their own stream (deterministic, so --resume reproduces it).
            torch.manual_seed((options.seed + epoch) + 1_000_003 * torch.distributed.get_rank())
        batches = _BatchFilter(iterator, "train")
        wrapper = unwrap(model)
        health = getattr(wrapper, "health", None) or TrainingHealth()
        monitored = UpdateMonitor(batches, wrapper.aqc, health, options.accum_grad, epoch,
                                              amp=bool(getattr(options, "use_amp", False)))
        cpu_threads.take_epoch_threads()  # the count starts here (not with the previous epoch's probe)
        result = super().train_one_epoch(
            model=model, iterator=monitored, optimizers=optimizers, schedulers=schedulers, scaler=scaler,
            reporter=reporter, summary_writer=summary_writer, options=options,
            distributed_option=distributed_option)
        report_epoch_count(reporter, "nonfinite_skipped", health.skipped_in_epoch)
        report_epoch_threads(reporter)
        batches.log_summary(epoch, min_samples)
        if monitored.batches == 0 and (batches.bad or batches.dropped):
            raise AQCUserError(
                f"no usable batch in the epoch: {batches.summary(epoch, min_samples)}. Fix: check the data "
                "(utils/validate_data_dir.py <dir>) and collate_fn_conf.min_sample_size")
        if distributed and getattr(options, "check_rank_consistency", False):
            check_rank_consistency(model, Path(options.output_dir), epoch)
        return result

    @classmethod
    def validate_one_epoch(cls, model, iterator, reporter, options, distributed_option) -> None:
        epoch = reporter.get_epoch()
        min_samples = _prepare_epoch(iterator, epoch, distributed_option.distributed)
        batches = _BatchFilter(iterator, "valid")
        super().validate_one_epoch(model=model, iterator=batches, reporter=reporter, options=options,
                                   distributed_option=distributed_option)
        batches.log_summary(epoch, min_samples)
        probe = cls.training_probe(options)
        if probe is not None and probe.due(epoch, options.max_epoch):
            probe.run(unwrap(model).aqc, reporter, epoch, distributed_option.distributed)
        elif probe is not None:
            probe.report_not_probed(reporter)


# ========================================================================================== task
class AQCSSLTask(SSLTask):
    """ESPnet's SSL task for data2vec-aqc (see the module docstring for what differs from SSLTask)."""

    num_optimizers: int = 1
    class_choices_list = [model_choices]  # --model aqc, --model_conf {preset: ..., ...}
    trainer = AQCTrainer

    @classmethod
    def get_parser(cls):
        parser = super().get_parser()
        parser.set_defaults(model=MODEL_NAME)
        add_global_batch_arguments(parser)
        cpu_threads.add_argument(parser)
        return parser

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Task related (aqc)")
        group.add_argument(
            "--collate_fn_conf", action=NestedDictAction, default=dict(),
            help="AQCCollateFn options: max_sample_size (random crop; reference 320000), min_sample_size "
                 "(drop shorter utterances; reference 32000, floor: two CNN frames), pad (false: crop to the "
                 "batch's shortest, reference; true: pad and pass lengths), normalize (true)")
        group.add_argument(
            "--augmentation_conf", action=NestedDictAction, default=None,
            help="aqc.augment options for the student view (training split only; null or {}: none), "
                 "e.g. {noise_scp: data/musan_noise/wav.scp}")
        group.add_argument("--init_upstream", type=str_or_none, default=None,
                           help="Continue pre-training from a released model: an aqc model file or ESPnet aqc "
                                "checkpoint, a Hugging Face Data2VecAudio folder, a fairseq data2vec(-aqc) "
                                "checkpoint. Weights (and the teacher where the file has one) from the file; "
                                "optimizer, scheduler and update counter afresh (aqc.espnet.warm_start)")
        group.add_argument("--sample_rate", type=int, default=16000,
                           help="Sample rate the model takes; audio at another rate is rejected "
                                "(or resampled with --resample true)")
        group.add_argument("--resample", type=str2bool, default=False,
                           help="Resample audio whose rate differs from --sample_rate when it is read, "
                                "instead of rejecting it")
        group.add_argument("--check_audio", type=str2bool, default=True,
                           help="Before training, read the header of every listed audio file and stop with "
                                "a list of the missing, unreadable, empty ones and those at another rate "
                                "(with --resample false); false: skip and count them when read")
        for class_choices in cls.class_choices_list:
            class_choices.add_arguments(group)

    @classmethod
    def main(cls, args: Optional[argparse.Namespace] = None, cmd=None):
        if args is None:
            args = cls.get_parser().parse_args(cmd)
        if not args.print_config:
            preflight_ssl(cls, args)  # GPUs, configuration, noise lists, data lists, audio headers, checkpoints
            prepare_distributed_run(args, args.sample_rate)  # DDP for --ngpu N; --samples_per_update
            prepare_probe_args(args)  # the probe's data and options; its checkpoint criterion
        cls.check_args(args)
        return super().main(args=args)

    @classmethod
    def check_args(cls, args: argparse.Namespace) -> None:
        if args.print_config:
            return
        if args.model != MODEL_NAME:
            raise ValueError(f"AQCSSLTask trains model: {MODEL_NAME} only (got {args.model!r}); use "
                             "espnet2.bin.ssl_train for ESPnet's HuBERT-style models")
        config_from_model_conf(args.model_conf or {})  # fail early on a bad model_conf
        if args.ngpu == 0 and args.dist_backend == "nccl":
            args.dist_backend = "gloo"  # NCCL needs GPUs; only used if the run is distributed
        if args.multiprocessing_distributed and "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1:
            # Under torchrun every process is one rank already; ESPnet's multiprocessing mode would take
            # each process for a node and put every rank on GPU 0.
            args.multiprocessing_distributed = False
        if args.num_iters_per_epoch is not None and args.num_iters_per_epoch % args.accum_grad != 0:
            raise ValueError(
                f"num_iters_per_epoch ({args.num_iters_per_epoch}) must be a multiple of accum_grad "
                f"({args.accum_grad}): ESPnet counts accumulation per epoch, so a remainder would carry "
                "partial gradients into the next epoch's first update")
        if getattr(args, "use_deepspeed", False):
            raise ValueError("DeepSpeed is not supported: its optimizer bypasses the teacher-update hook")

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> ESPnetAQCModel:
        if args.model != MODEL_NAME:
            raise ValueError(f"AQCSSLTask builds model: {MODEL_NAME} only, not {args.model!r}")
        model_class = model_choices.get_class(args.model)
        model = model_class(**(args.model_conf or {}))
        if getattr(args, "init_upstream", None):
            for line in warm_start(model.aqc, args.init_upstream):
                logging.info(line)
        model.health = TrainingHealth.from_args(args)
        cpu_threads.start_for_training(getattr(args, "num_threads", None))  # in every rank
        log_global_batch(args, getattr(args, "sample_rate", 16000))
        probe_line = describe_probe(args)
        if probe_line:
            logging.info(probe_line)
        return model

    @classmethod
    def build_optimizers(cls, args: argparse.Namespace, model: torch.nn.Module) -> List[torch.optim.Optimizer]:
        optimizers = super().build_optimizers(args, model)
        optimizers[0].register_step_post_hook(TeacherUpdateHook(unwrap(model).aqc))
        return optimizers

    @classmethod
    def build_collate_fn(cls, args: argparse.Namespace, train: bool) -> Callable[
        [Collection[Tuple[str, Dict[str, np.ndarray]]]], Tuple[List[str], Dict[str, torch.Tensor]]
    ]:
        if args.collect_stats:
            return MonoCollateFn()
        config = config_from_model_conf(args.model_conf or {})
        conf = dict(args.collate_fn_conf or {})
        check_collate_conf(conf)
        return AQCCollateFn(
            train=train, seed=args.seed,
            augmentation_conf=args.augmentation_conf if train else None,
            teacher_view=config.teacher_view,
            min_model_samples=min_samples_for(config.conv_layers),
            **conf)

    @classmethod
    def build_preprocess_fn(cls, args: argparse.Namespace, train: bool):
        return None

    @classmethod
    def required_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ("speech",)

    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return ()

    @classmethod
    def build_dataset(cls, args, iter_options, keys_to_load=None):
        dataset = super().build_dataset(args, iter_options, keys_to_load)
        loaders = getattr(dataset, "loader_dict", {})
        for name, loader in list(loaders.items()):
            if isinstance(loader, AdapterForSoundScpReader):
                # the sample-rate rule, then unusable audio skipped (audio_guard.AudioGuard)
                loaders[name] = AudioGuard(SampleRateGuard(loader, name, args.sample_rate, args.resample))
        return dataset
