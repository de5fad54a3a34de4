"""Reading and writing checkpoints: nothing in a file runs, no save leaves half a file.

Loading
    A checkpoint is a pickle, and unpickling can run whatever code the file names; people download
    checkpoints. Every file aqc loads as a model or a training state (aqc model files; ESPnet's
    ``checkpoint.pth``, ``<N>epoch.pth`` and averaged models of aqc's pre-training and fine-tuning;
    ``--init_param`` files) goes through :func:`load_checkpoint`: ``torch.load(weights_only=True)``,
    which rebuilds only tensors, plain containers and numbers, with the three kinds of value ESPnet's
    trainer stores besides (:data:`SAFE_GLOBALS`: numpy scalars and their numeric dtypes, and
    ``datetime.timedelta``). A file that names anything else is refused with one message
    (:class:`UnsafeCheckpointError`) and nothing from it runs. ESPnet's own loaders (``--resume``,
    ``--init_param``, decoding's ``--asr_model_file``) are routed here by :mod:`aqc.espnet.checkpoint_io`.
    Other toolkits' checkpoints (fairseq, s3prl) hold configuration objects and are read by the
    restricted unpickler of :mod:`aqc.interop.checkpoint`, which turns every unknown global into inert
    data.

Saving
    Every file aqc writes and every file of an ESPnet training under aqc's entry points is written to
    ``<name>.tmp`` and renamed over ``<name>`` (:func:`atomic_save`), so a kill during a save leaves the
    previous file intact plus a ``*.tmp`` that is never read (and is removed on ``--resume``). A save
    that fails because the disk (or the quota) is full stops with :class:`DiskFullError`, "no space left
    on <dir>", instead of PyTorch's C++ ``iostream error``; the previous file is intact.

Unreadable files
    An unreadable checkpoint (cut short by a full disk or a copy, corrupt) stops with one message naming
    it and what can be used instead (:func:`unreadable_checkpoint`): for ``--resume``, the last
    finished epoch's weights; for an export, ``checkpoint.pth`` or an earlier epoch file.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, List, Optional, Union

import numpy as np
import torch

from aqc.cli import NO_SPACE_ERRNOS, AQCUserError, exception_text, summarize_state_dict_error

logger = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

_NUMERIC_DTYPES = ("BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType",
                   "UInt16DType", "UInt32DType", "UInt64DType", "LongDType", "ULongDType", "LongLongDType",
                   "ULongLongDType", "Float16DType", "Float32DType", "Float64DType")
# Besides tensors and plain data, ESPnet's trainer state holds numpy scalars (the reporter's statistics)
# and timedeltas (its timers). Object arrays stay refused: they could hold anything.
SAFE_GLOBALS: List[Any] = [np._core.multiarray.scalar, np.dtype, datetime.timedelta] + [
    getattr(np.dtypes, name) for name in _NUMERIC_DTYPES if hasattr(np.dtypes, name)]


class CheckpointError(AQCUserError):
    """A checkpoint that cannot be read, or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle names code: refused, nothing of it ran."""


class DiskFullError(AQCUserError):
    """A save stopped by a full disk or quota."""


# ========================================================================================= loading
_GLOBAL = re.compile(r"(?:GLOBAL|global:?)\s+([\w.]+)")


def _refused(path: PathLike, exc: BaseException) -> UnsafeCheckpointError:
    text = str(exc)
    named = _GLOBAL.search(text)
    what = named.group(1) if named else None
    if what is None:
        built = re.search(r"but got (<[^>]+>)", text)
        what = built.group(1) if built else "an object other than tensors and plain data"
    return UnsafeCheckpointError(
        f"{path}: refused to load: the file names {what}, which a model or training checkpoint never holds, and "
        "unpickling it could run code from the file (nothing of it ran). Fix: use a model file written by aqc or "
        "ESPnet (tensors and plain data only); fairseq and s3prl checkpoints are read with `python -m "
        "aqc.bin.import_fairseq`, Hugging Face folders with aqc.api.load_model")


def names_code(exc: BaseException) -> bool:
    """Whether torch's weights-only unpickler stopped at a global it does not allow (code, or a class)."""
    text = str(exc)
    return (isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text
            and (_GLOBAL.search(text) is not None or "Can only build" in text))


def _weights_only_detail(exc: BaseException) -> str:
    """The line of a weights-only failure that says what was wrong (torch wraps it in a long paragraph)."""
    text = str(exc)
    tail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else text
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[0] if lines else "not a plain checkpoint"


def load_checkpoint(f: Union[PathLike, Any], map_location: Any = "cpu") -> Any:
    """``torch.load(f, weights_only=True)`` with :data:`SAFE_GLOBALS`; errors name the file.

    Raises :class:`UnsafeCheckpointError` for a file that names code, :class:`CheckpointError` for one that
    cannot be read, ``FileNotFoundError`` for a missing path. ``f`` may also be a file object."""
    is_path = isinstance(f, (str, os.PathLike))
    if is_path and not Path(f).is_file():
        raise FileNotFoundError(f"checkpoint not found: {f}")
    name = str(f) if is_path else getattr(f, "name", "<stream>")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if names_code(exc):
            raise _refused(name, exc) from None
        raise unreadable_checkpoint(Path(name), pickle.UnpicklingError(_weights_only_detail(exc))) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
            raise
        raise unreadable_checkpoint(Path(name), exc) from exc


# ========================================================================================== saving
def _out_of_space(tmp: Path, exc: BaseException) -> bool:
    """Whether a failed write of ``tmp`` ran out of space. PyTorch's zip writer reports only "iostream
    error", so the answer comes from writing more to the same (partial) file with Python."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return True
    try:
        with open(tmp, "ab") as probe:
            probe.write(b"\0" * (1 << 20))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as probe_exc:
        return probe_exc.errno in NO_SPACE_ERRNOS
    return False


def atomic_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    """``torch.save`` that writes a path via ``<path>.tmp`` and ``os.replace`` (file objects: as is).

    A full disk raises :class:`DiskFullError` naming the directory; the previous file is left intact."""
    if not isinstance(f, (str, os.PathLike)):
        torch.save(obj, f, *args, **kwargs)
        return
    path = Path(f)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp, *args, **kwargs)
    except (RuntimeError, OSError) as exc:
        full = _out_of_space(tmp, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        if not full:
            raise
        kept = f"; the previous {path.name} is intact" if path.exists() else ""
        raise DiskFullError(
            f"no space left on {path.parent.resolve()} while saving {path.name} (the save was abandoned{kept}). "
            "Fix: free space on that device (or write elsewhere), then rerun; training continues from its last "
            "finished epoch with --resume true") from exc
    os.replace(tmp, path)


def discard_partial_saves(output_dir: PathLike) -> List[Path]:
    """Remove ``*.pth.tmp`` files left by a save that was interrupted; they are never loaded."""
    removed = []
    for tmp in sorted(Path(output_dir).glob("*.pth.tmp")):
        logger.warning(f"removing {tmp}: an interrupted save (the previous {tmp.name[:-4]} is intact)")
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


# ================================================================================ unreadable files
def epoch_files(output_dir: PathLike) -> List[Path]:
    """``<N>epoch.pth`` files of an ESPnet experiment, oldest first."""
    found = []
    for p in Path(output_dir).glob("*epoch.pth"):
        m = re.fullmatch(r"(\d+)epoch\.pth", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def short_error(exc: BaseException, limit: int = 160) -> str:
    text = exception_text(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    text = text.split("(Could this error message be improved?")[0].strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _zip_problem(path: PathLike) -> Optional[BaseException]:
    """Why ``path`` is not a torch zip checkpoint whose central directory can be read (None if it is)."""
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
        return None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return exc


def is_readable_zip(path: PathLike) -> bool:
    return _zip_problem(path) is None


def unreadable_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    """The error for a checkpoint that cannot be read, with what to use instead."""
    path = Path(path)
    resolved = path.resolve() if path.is_symlink() else path
    shown = f"{path} (-> {resolved.name})" if resolved != path else str(path)
    if path.name == "checkpoint.pth":
        epochs = [p for p in epoch_files(path.parent) if is_readable_zip(p)]
        restart = (f", or continue from the weights of the last finished epoch with --init_param {epochs[-1]} (the "
                   "optimizer state and the LR schedule restart)" if epochs else "")
        fix = f"delete {path}; then start over (without --resume){restart}"
    else:
        others = [p for p in [path.parent / "checkpoint.pth"] + epoch_files(path.parent)[::-1]
                  if p.resolve() != resolved and p.is_file() and is_readable_zip(p)]
        fix = (f"use another model file, e.g. {others[0]} (readable: {', '.join(p.name for p in others[:4])}); "
               "an interrupted training run rewrites it with --resume true" if others else
               "use another copy of the model; an interrupted training run rewrites it with --resume true")
    return CheckpointError(f"{shown} cannot be read ({type(exc).__name__}: {short_error(exc)}); it is cut short or "
                           f"corrupt. Fix: {fix}")


def mismatching_checkpoint(path: Path, exc: BaseException) -> CheckpointError:
    summary = summarize_state_dict_error(str(exc)) or (
        f"it does not fit this run ({short_error(exc)}); use the configuration it was written with, or a new --output_dir")
    return CheckpointError(f"{path}: {summary}")


def check_checkpoint_readable(path: PathLike) -> None:
    """Cheap check before training: a torch zip checkpoint whose central directory can be read."""
    problem = _zip_problem(path)
    if problem is not None:
        raise unreadable_checkpoint(Path(path), problem) from problem


@contextlib.contextmanager
def checkpoint_errors(path: PathLike):
    """Turn the errors of loading ``path`` (unreadable, or weights of another model) into CheckpointError."""
    path = Path(path)
    try:
        yield
    except CheckpointError:
        raise
    except RuntimeError as exc:
        if "Error(s) in loading state_dict" in str(exc):
            raise mismatching_checkpoint(path, exc) from exc
        raise unreadable_checkpoint(path, exc) from exc
    except (ValueError, KeyError) as exc:  # optimizer/scheduler state of another model, or not a checkpoint
        raise mismatching_checkpoint(path, exc) from exc
    except (EOFError, zipfile.BadZipFile) as exc:
        raise unreadable_checkpoint(path, exc) from exc
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise
        raise unreadable_checkpoint(path, exc) from exc
    except pickle.UnpicklingError as exc:
        raise unreadable_checkpoint(path, exc) from exc
