"""Reliability of long pre-training runs: crashes, bad input, numerical trouble, user errors (issue 9).

A run lasts days; each way of losing it is a handled case. The rules:

Crash and resume
    ESPnet writes ``checkpoint.pth`` (model, optimizer, scheduler, reporter, AMP scaler) at the end of
    every epoch and reseeds every RNG with ``seed + epoch`` when an epoch starts. A run killed in the
    middle of an epoch (SIGKILL, node loss) is continued with ``--resume true`` from the last completed
    epoch's checkpoint: the interrupted epoch is redone from its start and, with deterministic settings,
    gives exactly the losses and weights of an uninterrupted run. Every file aqc's trainer saves
    (``checkpoint.pth``, ``<N>epoch.pth``, averaged models) is written to ``<name>.tmp`` and renamed
    over ``<name>`` (:func:`atomic_save`), so a kill during a save leaves the previous file intact plus
    a ``*.tmp`` that is never read (and is removed on resume). An unreadable ``checkpoint.pth``
    (disk trouble, a copy cut short) stops ``--resume`` before training with one message naming it and
    the fix. ``--resume`` with a ``model_conf`` other than the one in the run's ``config.yaml`` stops
    before ESPnet overwrites that file; weights of a different architecture are reported in one line
    for ``--resume`` and for ``--init_param``.

Bad audio (training and validation lists, ``--train/valid_data_path_and_name_and_type ...,sound``).
``utils/validate_data_dir.py`` reports every problem of a data dir at once (decoding every file); the
trainer applies these rules:

    =============================================  ===============================================
    missing file                                   rejected before training (pre-flight)
    unreadable header / not audio / 0-byte file    rejected before training (pre-flight)
    zero samples                                   rejected before training (pre-flight)
    sample rate other than ``sample_rate``         ``resample: false``: rejected before training
                                                   (pre-flight); ``resample: true``: resampled
    stereo / multi-channel                         down-mixed (channel mean)
    shorter than ``min_sample_size`` (at least     dropped in the collate, counted per epoch
    two CNN frames: receptive field + one stride)
    shorter than one mask span                     trains; the span is clipped to the utterance
    decoding fails after a good header (damaged    skipped when read, counted per epoch, the file
    data, or a file gone since the pre-flight)     named in a WARNING
    NaN or Inf samples                             skipped when read, counted, named
    all-silent (constant, e.g. all zeros)          skipped when read, counted, named
    augmented view with NaN/Inf (bad noise file)   utterance dropped, counted, named
    =============================================  ===============================================

    The pre-flight (:func:`preflight_audio`, ``--check_audio true``, the default) reads every listed
    file's header (a stat and a few bytes each, threaded) and stops with one message listing every
    rejected file (the first 20, then a count). NaN/Inf and silence need every sample, so they are
    checked when a file is read (:class:`AudioGuard`); such audio never reaches the model (normalising
    silence would divide by zero). ``--check_audio false`` skips the pre-flight: then missing and
    unreadable files are skipped and counted when read, like damaged ones. An epoch in which no batch
    is left stops the run with the counts.

Configuration
    Unknown or invalid keys in ``model_conf``, ``collate_fn_conf`` and ``augmentation_conf``, a noise or
    RIR list that is missing or empty (e.g. made from a MUSAN root without noise files), and an
    unreadable or mismatching checkpoint are found before the first update (:func:`preflight`).
    :func:`run_cli` is the entry points' wrapper: a known user error (:class:`AQCUserError`,
    ``ValueError``, ``FileNotFoundError``, :class:`aqc.models.model.CollapseError`, a noise-file error,
    a ``state_dict`` size mismatch such as a token list that does not fit the model, an unexpected
    keyword in a ``*_conf``) prints ``ERROR: <message>`` and exits with status 2; ``AQC_DEBUG=1``
    shows the full traceback instead.

Numerics
    A non-finite loss never updates the model: the wrapper poisons it so every gradient is NaN, and
    ESPnet's trainer then skips ``optimizer.step()`` (the EMA teacher and the schedules do not move).
    Skipped updates (non-finite loss or gradient) are logged and reported per epoch as the stat
    ``nonfinite_skipped``; ``--max_nonfinite_in_a_row`` (default 10; 0: never) skipped updates in a row
    stop the run with advice. With ``--use_amp true`` an fp16 gradient overflow under a finite loss is
    the loss scaler's normal calibration: counted, but not toward the stop. Collapse: the model raises
    :class:`~aqc.models.model.CollapseError` when the target or prediction std falls below its floor
    (after ``collapse_check_after`` updates); :func:`run_cli` prints it with its advice. The code
    perplexity (hard code usage of the quantizer) below ``--min_code_perplexity_fraction`` (default
    2 %) of the codebook (``latent_groups x latent_vars``) for ``--code_perplexity_patience``
    consecutive training batches logs a WARNING with advice (the run goes on).

Test hook: ``AQC_TEST_SIGKILL_AT=<epoch>:<iteration>`` makes the trainer SIGKILL itself after that many
iterations of that epoch (tests of the mid-epoch crash).
"""
from __future__ import annotations

import collections.abc
import contextlib
import logging
import math
import os
import re
import signal
import sys
import types
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)

DEBUG_ENV = "AQC_DEBUG"
KILL_ENV = "AQC_TEST_SIGKILL_AT"
EXIT_USER_ERROR = 2
MAX_LISTED = 20


# ========================================================================================= errors
class AQCUserError(Exception):
    """A problem the user can fix (the message names the file or key, and the fix)."""


class BadAudioError(AQCUserError):
    """Audio files that cannot be used, found before training."""


class CheckpointError(AQCUserError):
    """A checkpoint that cannot be read, or does not fit the model."""


class NonFiniteLossError(AQCUserError):
    """Too many updates in a row skipped for a non-finite loss or gradient."""


def _user_error_types() -> Tuple[type, ...]:
    types_: List[type] = [AQCUserError, ValueError, FileNotFoundError]
    with contextlib.suppress(ImportError):
        from aqc.models.model import CollapseError

        types_.append(CollapseError)
    with contextlib.suppress(ImportError):
        from aqc.augment.audio_list import AudioFileError

        types_.append(AudioFileError)
    with contextlib.suppress(ImportError):
        from aqc.augment.make_list import ListError

        types_.append(ListError)
    return tuple(types_)


_SIZE_MISMATCH = re.compile(r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) "
                            r"from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)")
_TOKEN_PARAMS = ("ctc.ctc_lo.", "decoder.output_layer.", "decoder.embed.")


def summarize_state_dict_error(message: str) -> Optional[str]:
    """One line for PyTorch's ``Error(s) in loading state_dict`` wall (None if ``message`` is not one)."""
    if "Error(s) in loading state_dict" not in message:
        return None
    mismatches = _SIZE_MISMATCH.findall(message)
    missing = re.search(r"Missing key\(s\) in state_dict: (.*?)(?:\.\s*\n|\.\s*$|\n\t)", message, re.S)
    unexpected = re.search(r"Unexpected key\(s\) in state_dict: (.*?)(?:\.\s*\n|\.\s*$|\n\t)", message, re.S)
    n_missing = len(re.findall(r'"([^"]+)"', missing.group(1))) if missing else 0
    n_unexpected = len(re.findall(r'"([^"]+)"', unexpected.group(1))) if unexpected else 0
    token = [m for m in mismatches if m[0].startswith(_TOKEN_PARAMS)]
    if token and len(token) == len(mismatches) and not (n_missing or n_unexpected):
        name, saved, current = token[0]
        saved_n, current_n = saved.split(",")[0].strip(), current.split(",")[0].strip()
        return (f"the model was trained with {saved_n} output tokens but this token list gives {current_n} "
                f"({name}: checkpoint [{saved}] vs model [{current}]). Use the token list the model was trained "
                "with (token_list in the experiment's config.yaml).")
    parts = []
    if mismatches:
        name, saved, current = mismatches[0]
        parts.append(f"{len(mismatches)} size mismatch(es), e.g. {name}: checkpoint [{saved}] vs model [{current}]")
    if n_missing:
        parts.append(f"{n_missing} key(s) missing from the checkpoint")
    if n_unexpected:
        parts.append(f"{n_unexpected} unexpected key(s) in the checkpoint")
    return ("the weights do not fit the model (" + "; ".join(parts or ["keys differ"]) + "): a checkpoint of a "
            "different architecture; use the model configuration it was trained with (its experiment's config.yaml).")


_UNEXPECTED_KW = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'")
_MISSING_ARG = re.compile(r"(\w+)\.__init__\(\) missing \d+ required (?:positional|keyword-only) argument(?:s)?: (.+)")


def _worker_message(exc: BaseException) -> str:
    """The original message of an exception re-raised from a DataLoader worker (else ``str(exc)``)."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    tail = text.split("Original Traceback", 1)[1]
    marker = f"\n{type(exc).__name__}: "
    pos = tail.rfind(marker)
    return tail[pos + len(marker):].strip() if pos >= 0 else text.strip().splitlines()[-1]


def user_message(exc: BaseException) -> Optional[str]:
    """The message to print for a known user error, or None for anything else (a bug: traceback)."""
    if isinstance(exc, (RuntimeError,) + _user_error_types()):
        text = _worker_message(exc)
        summary = summarize_state_dict_error(text)
        if summary is not None:  # e.g. load_model_file's "<path>: weights do not fit ...: Error(s) in ..."
            prefix = text.split("Error(s) in loading state_dict")[0].strip()
            return f"{prefix} {summary}" if prefix else summary
    if isinstance(exc, TypeError):
        m = _UNEXPECTED_KW.search(str(exc))
        if m:
            return (f"unknown option {m.group(2)!r} for {m.group(1)}: remove it from its *_conf section "
                    f"(check the spelling against {m.group(1)}'s documented options)")
        m = _MISSING_ARG.search(str(exc))
        if m:
            return f"{m.group(1)} needs the option(s) {m.group(2)}: add them to its *_conf section"
    if isinstance(exc, _user_error_types()):
        if isinstance(exc, FileNotFoundError) and exc.filename is not None and str(exc.filename) not in str(exc):
            return f"file not found: {exc.filename}"
        return _worker_message(exc)
    return None


def run_cli(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an entry point's ``main``; a known user error prints ``ERROR: ...`` and exits with status 2.

    ``AQC_DEBUG=1`` re-raises instead (full traceback). Unknown exceptions (bugs) propagate unchanged.
    """
    with guard_init_param():
        return run_cli_without_espnet(main, *args, **kwargs)


def run_cli_without_espnet(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`run_cli` for tools that never load ESPnet checkpoints (no ESPnet import: starts fast)."""
    try:
        return main(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - filtered by user_message
        message = None if os.environ.get(DEBUG_ENV, "") not in ("", "0") else user_message(exc)
        if message is None:
            raise
        lines = message.strip().splitlines() or [type(exc).__name__]
        print(f"ERROR: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(line, file=sys.stderr)
        print(f"(a user error: {type(exc).__name__}; set {DEBUG_ENV}=1 for the full traceback)", file=sys.stderr)
        sys.stderr.flush()
        sys.exit(EXIT_USER_ERROR)


# ===================================================================================== checkpoints
def atomic_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    """``torch.save`` that writes a path via ``<path>.tmp`` and ``os.replace`` (file objects: as is)."""
    if not isinstance(f, (str, os.PathLike)):
        torch.save(obj, f, *args, **kwargs)
        return
    path = Path(f)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp, *args, **kwargs)
    os.replace(tmp, path)


class _TorchWithAtomicSave(types.ModuleType):
    """Stands in for ``torch`` in ESPnet's trainer module: every attribute is torch's but ``save``."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        atomic_save(obj, f, *args, **kwargs)


@contextlib.contextmanager
def atomic_trainer_saves():
    """While active, ESPnet's ``Trainer`` writes every checkpoint atomically (see :func:`atomic_save`)."""
    import espnet2.train.trainer as espnet_trainer

    original = espnet_trainer.torch
    if isinstance(original, _TorchWithAtomicSave):
        yield
        return
    espnet_trainer.torch = _TorchWithAtomicSave()
    try:
        yield
    finally:
        espnet_trainer.torch = original


def discard_partial_saves(output_dir: Path) -> List[Path]:
    """Remove ``*.pth.tmp`` files left by a save that was interrupted; they are never loaded."""
    removed = []
    for tmp in sorted(Path(output_dir).glob("*.pth.tmp")):
        logger.warning(f"removing {tmp}: an interrupted save (the previous {tmp.name[:-4]} is intact)")
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _last_epoch_file(output_dir: Path) -> Optional[Path]:
    epochs = []
    for p in Path(output_dir).glob("*epoch.pth"):
        m = re.fullmatch(r"(\d+)epoch\.pth", p.name)
        if m:
            epochs.append((int(m.group(1)), p))
    return max(epochs)[1] if epochs else None


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split("(Could this error message be improved?")[0].strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _unreadable_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    detail = _short(exc)
    weights = _last_epoch_file(path.parent)
    restart = (f", or continue from the weights of the last finished epoch with --init_param {weights} (the "
               "optimizer state and the LR schedule restart)" if weights is not None else "")
    return CheckpointError(
        f"{path} cannot be read ({type(exc).__name__}: {detail}); it is cut short or corrupt, so --resume cannot "
        f"use it. Fix: delete {path}; then start over (without --resume){restart}")


def _mismatching_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    summary = summarize_state_dict_error(str(exc)) or (
        f"it does not fit this run ({_short(exc)}); use the configuration it was written with, or a new --output_dir")
    return CheckpointError(f"{path}: {summary}")


def check_resume_config(output_dir: Path, model_conf: Optional[Dict[str, Any]]) -> None:
    """``--resume`` with a ``model_conf`` other than the run's: stop before ESPnet overwrites config.yaml."""
    import yaml

    from aqc.models.io import config_from_model_conf

    path = Path(output_dir) / "config.yaml"
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        saved = (yaml.safe_load(f) or {}).get("model_conf") or {}
    try:
        old = config_from_model_conf(saved).to_dict()
    except ValueError:
        return
    new = config_from_model_conf(model_conf or {}).to_dict()
    changed = sorted(k for k in new if new[k] != old.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed[:8])
        raise CheckpointError(
            f"--resume true in {output_dir}, but model_conf differs from the run's {path} ({diffs}). Fix: resume "
            f"with the configuration of that run (e.g. --config {path}), or use a new --output_dir")


def check_checkpoint_readable(path: Path) -> None:
    """Cheap check before training: a torch zip checkpoint whose central directory can be read."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _unreadable_checkpoint(path, exc) from exc


@contextlib.contextmanager
def checkpoint_errors(path: Path):
    """Turn the errors of loading ``path`` (unreadable, or weights of another model) into CheckpointError."""
    path = Path(path)
    try:
        yield
    except CheckpointError:
        raise
    except RuntimeError as exc:
        if "Error(s) in loading state_dict" in str(exc):
            raise _mismatching_checkpoint(path, exc) from exc
        raise _unreadable_checkpoint(path, exc) from exc
    except (ValueError, KeyError) as exc:  # optimizer/scheduler state of another model, or not a checkpoint
        raise _mismatching_checkpoint(path, exc) from exc
    except (EOFError, OSError, zipfile.BadZipFile) as exc:
        raise _unreadable_checkpoint(path, exc) from exc
    except Exception as exc:  # noqa: BLE001 - pickle.UnpicklingError and friends
        if type(exc).__name__ == "UnpicklingError":
            raise _unreadable_checkpoint(path, exc) from exc
        raise


@contextlib.contextmanager
def guard_init_param():
    """While active, ESPnet's ``--init_param`` loading reports a bad file in one line (CheckpointError)."""
    try:
        import espnet2.tasks.abs_task as abs_task
    except ImportError:  # pragma: no cover
        yield
        return
    original = abs_task.load_pretrained_model
    if getattr(original, "_aqc_guarded", False):
        yield
        return

    def load_pretrained_model(init_param: str, *args: Any, **kwargs: Any):
        path = Path(init_param.split(":", 1)[0])
        if not path.is_file():
            raise CheckpointError(f"--init_param {init_param}: {path} does not exist")
        with checkpoint_errors(path):
            return original(init_param, *args, **kwargs)

    load_pretrained_model._aqc_guarded = True  # type: ignore[attr-defined]
    abs_task.load_pretrained_model = load_pretrained_model
    try:
        yield
    finally:
        abs_task.load_pretrained_model = original


# ============================================================================================ audio
BAD_AUDIO_SHAPE = (0, 0)


def bad_audio_marker() -> np.ndarray:
    """What :class:`AudioGuard` returns for audio that must not be used: a (0, 0) float32 array (real
    audio of 0 frames is ``(0,)`` or ``(0, channels)``); the collate drops and counts it."""
    return np.zeros(BAD_AUDIO_SHAPE, dtype=np.float32)


def is_bad_audio(array: np.ndarray) -> bool:
    return isinstance(array, np.ndarray) and array.shape == BAD_AUDIO_SHAPE


def audio_problem(array: np.ndarray) -> Optional[str]:
    """Why a decoded waveform must not reach the model (NaN/Inf, all-silent), or None."""
    if array.size == 0:
        return None  # zero length: the collate's length rule drops it
    finite = np.isfinite(array)
    if not finite.all():
        return f"{int(array.size - np.count_nonzero(finite))} NaN/Inf sample(s)"
    if float(np.max(array)) - float(np.min(array)) <= 0.0:
        return "all-silent (every sample is the same value)"
    return None


class AudioGuard(collections.abc.Mapping):
    """Wraps a sound loader (a :class:`aqc.espnet.collate.SampleRateGuard`): unreadable, NaN/Inf and
    all-silent audio becomes :func:`bad_audio_marker` with a WARNING naming the file (once per process).
    A sample-rate rejection (``SampleRateError``) still stops the run."""

    def __init__(self, inner):
        self.inner = inner
        self._warned: set = set()

    def keys(self):
        return self.inner.keys()

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self):
        return iter(self.inner)

    def _path(self, key: str) -> str:
        path_of = getattr(self.inner, "_path", None)
        return path_of(key) if path_of is not None else f"utterance {key}"

    def _skip(self, key: str, reason: str) -> np.ndarray:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(f"skipping {self._path(key)} (id {key}): {reason}")
        return bad_audio_marker()

    def __getitem__(self, key: str) -> np.ndarray:
        from .collate import SampleRateError

        try:
            array = self.inner[key]
        except SampleRateError:
            raise
        except Exception as exc:  # noqa: BLE001 - soundfile raises several types
            return self._skip(key, f"cannot be read ({type(exc).__name__}: {_short(exc)})")
        problem = audio_problem(np.asarray(array))
        if problem is not None:
            return self._skip(key, problem)
        return array


def _probe_header(path: str) -> Tuple[Optional[str], int, int]:
    """(problem or None, frames, sample rate) from the file's header."""
    import soundfile as sf

    if not os.path.isfile(path):
        return "does not exist", 0, 0
    try:
        info = sf.info(path)
    except Exception as exc:  # noqa: BLE001
        return f"cannot be read as audio ({_short(exc)})", 0, 0
    if info.frames <= 0:
        return "has zero samples", 0, int(info.samplerate)
    return None, int(info.frames), int(info.samplerate)


def preflight_audio(data_specs: Sequence[Tuple[str, str, str]], sample_rate: int = 16000,
                    resample: bool = False, num_threads: int = 8) -> int:
    """Check every file of the ``sound`` lists before training (see the module docstring).

    ``data_specs``: ESPnet's ``(path, name, type)`` triples. Raises :class:`BadAudioError` listing every
    rejected file; returns the number of files checked.
    """
    from espnet2.fileio.read_text import read_2columns_text

    problems: List[str] = []
    other_rates: Dict[int, List[str]] = {}
    checked = 0
    seen = set()
    for spec in data_specs:
        scp, name, kind = spec[0], spec[1], spec[2]
        if kind != "sound" or scp in seen:
            continue
        seen.add(scp)
        if not os.path.isfile(scp):
            raise FileNotFoundError(f"{scp} (the {name} list) does not exist")
        table = read_2columns_text(scp)
        keys = list(table)
        with ThreadPoolExecutor(max(1, num_threads)) as pool:
            results = list(pool.map(_probe_header, [table[k] for k in keys]))
        checked += len(keys)
        for key, (problem, _, rate) in zip(keys, results):
            if problem is not None:
                problems.append(f"  {scp}: {key} {table[key]}: {problem}")
            elif not resample and rate != sample_rate:
                other_rates.setdefault(rate, []).append(f"{scp}: {key} {table[key]}")
    for rate, files in sorted(other_rates.items()):  # usually a whole corpus: one line per rate
        problems.append(f"  {len(files)} file(s) at {rate} Hz, the model takes {sample_rate} Hz (resample the "
                        f"data, or set resample: true), e.g. {files[0]}")
    if problems:
        shown = problems[:MAX_LISTED]
        more = [f"  ... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        total = len(problems) - len(other_rates) + sum(len(f) for f in other_rates.values())
        raise BadAudioError("\n".join(
            [f"{total} audio file(s) cannot be used; training did not start:"] + shown + more
            + ["Fix: repair or remove them (remove the lines, then utils/fix_data_dir.py <dir>); "
               "utils/validate_data_dir.py <dir> checks every sample of every file"]))
    return checked


# ================================================================================ configuration
COLLATE_KEYS = ("max_sample_size", "min_sample_size", "pad", "normalize")


def check_collate_conf(conf: Optional[Dict[str, Any]]) -> None:
    unknown = sorted(set(conf or {}) - set(COLLATE_KEYS))
    if unknown:
        raise ValueError(f"collate_fn_conf: unknown option(s) {unknown}; valid: {', '.join(COLLATE_KEYS)}")


def preflight(args) -> None:
    """Everything that can be checked before ESPnet builds the model (see the module docstring)."""
    check_collate_conf(getattr(args, "collate_fn_conf", None))
    if getattr(args, "augmentation_conf", None) and not getattr(args, "collect_stats", False):
        from .collate import build_augmentation

        try:
            build_augmentation(args.augmentation_conf)  # unknown keys, missing/empty noise or RIR lists
        except ValueError as exc:
            raise ValueError(f"augmentation_conf: {exc}") from exc
    output_dir = getattr(args, "output_dir", None)
    if getattr(args, "resume", False) and output_dir is not None:
        checkpoint = Path(output_dir) / "checkpoint.pth"
        if checkpoint.exists():
            check_checkpoint_readable(checkpoint)
            if hasattr(args, "model_conf"):
                check_resume_config(Path(output_dir), args.model_conf)
    for init_param in getattr(args, "init_param", None) or []:
        path = Path(init_param.split(":", 1)[0])
        if not path.is_file():
            raise CheckpointError(f"--init_param {init_param}: {path} does not exist")
    if getattr(args, "check_audio", True):
        specs = list(getattr(args, "train_data_path_and_name_and_type", None) or [])
        specs += list(getattr(args, "valid_data_path_and_name_and_type", None) or [])
        preflight_audio(specs, getattr(args, "sample_rate", 16000), getattr(args, "resample", False))


# ========================================================================================= numerics
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

