"""Checks before a training or decoding run spends time: configuration, GPUs, data lists, audio headers.

Everything here runs before ESPnet builds a model, and each problem stops the run with one message that
names the file or the key and the fix (:func:`aqc.cli.run_cli` prints it):

* ``--ngpu N`` on a machine where PyTorch sees fewer GPUs (:func:`aqc.cli.check_ngpu`).
* Values of the wrong type in a ``<name>_conf`` section (``optim_conf: {lr: fast}``), checked against the
  defaults of the class the section configures (:func:`check_conf_types`). A number written so that
  YAML 1.1 reads it as text (``lr: 1e-3``) is taken as the number, with a log line.
* Unknown keys in ``collate_fn_conf``; unknown keys, and missing or empty noise and RIR lists, in
  ``augmentation_conf``.
* ``--resume true``: an unreadable ``checkpoint.pth``, or a ``model_conf`` other than the run's.
* ``--init_param`` files that do not exist.
* The data lists: every file named by ``--*_data_path_and_name_and_type`` exists, and the lists of one
  split hold the same utterance ids (a text without one of the audio's utterances would otherwise be a
  ``KeyError`` at its first batch).
* The audio (:func:`preflight_audio`): every file's header, read before the first update; with
  ``read_samples`` (decoding) every sample, so NaN/Inf audio is named. The rules for what training
  does with the rest are in :mod:`aqc.espnet.audio_guard`.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from aqc.cli import AQCUserError, check_ngpu

from . import epoch_plots
from .audio_guard import BadAudioError, audio_problem, read_failure

logger = logging.getLogger(__name__)

MAX_LISTED = 20
COLLATE_KEYS = ("max_sample_size", "min_sample_size", "pad", "normalize")
DataSpec = Tuple[str, str, str]


# =================================================================================== configuration
def check_collate_conf(conf: Optional[Dict[str, Any]]) -> None:
    unknown = sorted(set(conf or {}) - set(COLLATE_KEYS))
    if unknown:
        raise ValueError(f"collate_fn_conf: unknown option(s) {unknown}; valid: {', '.join(COLLATE_KEYS)}")


def _takes_text(annotation: Any) -> bool:
    """Whether a parameter annotation admits text (``Union[int, str]``, ``Any``), or says nothing."""
    if annotation is inspect.Parameter.empty:
        return False
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return any(word in text for word in ("str", "Any", "Literal"))


def _option_defaults(cls: type) -> Dict[str, Any]:
    """The defaults of a class's options whose type they show: its ``option_defaults()`` if it has one
    (classes taking ``**kwargs``), else its constructor's keyword defaults, leaving out parameters whose
    annotation admits text (``layer: Union[int, str] = -1`` also takes ``"weighted"``)."""
    own = getattr(cls, "option_defaults", None)
    if callable(own):
        return dict(own())
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p.default for name, p in params.items()
            if p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
            and not _takes_text(p.annotation)}


def _as_number(value: str) -> Optional[float]:
    try:
        return float(value)
    except ValueError:
        return None


def _type_problem(value: Any, default: Any) -> Optional[Tuple[str, Any]]:
    """(what the option takes, the value to use) when ``value`` does not fit ``default``'s type;
    ``(None, number)`` for a number written as text. ``None`` is left to the class (often "unset")."""
    if value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else ("true or false", None)
    if isinstance(default, (int, float)):
        if isinstance(value, bool):
            return ("a number", None)
        if isinstance(value, (int, float)):
            return None
        if isinstance(value, str):
            number = _as_number(value)
            if number is not None:
                return (None, int(number) if isinstance(default, int) and number.is_integer() else number)
        return ("a number", None)
    return None


def _conf_sections(task, args) -> List[Tuple[str, type]]:
    """``(section name, class)`` for every ``<name>_conf`` of this run whose class is known."""
    from espnet2.tasks.abs_task import optim_classes, scheduler_classes

    sections = []
    for suffix in ("", *(str(i) for i in range(2, 1 + getattr(task, "num_optimizers", 1)))):
        optim = getattr(args, f"optim{suffix}", None)
        if optim is not None and optim in optim_classes:
            sections.append((f"optim{suffix}", optim_classes[optim]))
        scheduler = getattr(args, f"scheduler{suffix}", None)
        if scheduler is not None and scheduler in scheduler_classes:
            sections.append((f"scheduler{suffix}", scheduler_classes[scheduler]))
    for choices in getattr(task, "class_choices_list", []):
        chosen = getattr(args, choices.name, None)
        if chosen is None:
            continue
        try:
            sections.append((choices.name, choices.get_class(chosen)))
        except ValueError:
            continue  # an unknown choice is ESPnet's own error
    return sections


def _config_sections(args) -> Dict[str, Any]:
    config = getattr(args, "config", None)
    if not config or not os.path.isfile(config):
        return {}
    import yaml

    with open(config, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def check_conf_types(task, args) -> None:
    """Every ``<name>_conf`` value has the type its class's default has (see the module docstring)."""
    from_file = _config_sections(args)
    for name, cls in _conf_sections(task, args):
        conf = getattr(args, f"{name}_conf", None)
        if not isinstance(conf, dict):
            continue
        defaults = _option_defaults(cls)
        for key, value in list(conf.items()):
            if key not in defaults:
                continue
            problem = _type_problem(value, defaults[key])
            if problem is None:
                continue
            takes, number = problem
            in_file = from_file.get(f"{name}_conf") or {}
            from_config = isinstance(in_file, dict) and key in in_file and in_file[key] == value
            where = args.config if from_config else f"the command line (--{name}_conf)"
            if takes is None:
                logger.info(f"{name}_conf.{key}: {value!r} read as the number {number!r} ({where}; YAML 1.1 reads "
                            f"'1e-3' as text, '1.0e-3' as a number)")
                conf[key] = number
                continue
            raise AQCUserError(
                f"{where}: {name}_conf.{key} is {value!r} ({type(value).__name__}), but {cls.__name__}'s {key} "
                f"takes {takes} (default {defaults[key]!r}). Fix: give {takes}, e.g. {name}_conf: {{{key}: "
                f"{defaults[key]!r}}}")


def check_plot_every_epochs(args) -> None:
    """A config file's ``plot_every_epochs`` becomes a parser default, which argparse does not check."""
    try:
        epoch_plots.check(getattr(args, "plot_every_epochs", 1))
    except ValueError as exc:
        where = getattr(args, "config", None) or "the command line"
        raise AQCUserError(f"{where}: {exc}. Fix: plot_every_epochs: 1 draws after every epoch, N after every "
                           "N-th and the last") from exc


# ======================================================================================= data lists
def sound_specs(args) -> List[DataSpec]:
    specs = list(getattr(args, "train_data_path_and_name_and_type", None) or [])
    specs += list(getattr(args, "valid_data_path_and_name_and_type", None) or [])
    return [tuple(s[:3]) for s in specs]


def _list_keys(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.split(maxsplit=1)[0] for line in f if line.strip()]


def check_data_lists(split: str, specs: Sequence[DataSpec]) -> None:
    """Every list of one split exists and holds the same utterance ids."""
    keyed: List[Tuple[str, set]] = []
    for path, name, kind in specs:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} (the {split} {name} list, --{split}_data_path_and_name_and_type) "
                                    "does not exist")
        if kind in ("sound", "text", "kaldi_ark", "npy", "multi_columns_sound"):
            keyed.append((path, set(_list_keys(path))))
    if not keyed:
        return
    first, first_keys = keyed[0]  # ESPnet iterates the first list's ids and looks each up in the others
    for path, keys in keyed[1:]:
        missing = sorted(first_keys - keys)
        if missing:
            raise AQCUserError(
                f"the {split} lists disagree: {len(missing)} utterance(s) of {first} are not in {path} (e.g. "
                f"{', '.join(missing[:5])}). Fix: make the data directory consistent (utils/fix_data_dir.py <dir> "
                "keeps the utterances every file has), then redo its format stage")


def _probe(path: str, read_samples: bool) -> Tuple[Optional[str], int]:
    """(problem or None, sample rate): the header, and with ``read_samples`` every sample."""
    import soundfile as sf

    if not os.path.isfile(path):
        return "does not exist", 0
    try:
        info = sf.info(path)
    except Exception as exc:  # noqa: BLE001
        return read_failure(path, exc), 0
    if info.frames <= 0:
        return "has zero samples", int(info.samplerate)
    if read_samples:
        try:
            data, _ = sf.read(path, dtype="float32", always_2d=True)
        except Exception as exc:  # noqa: BLE001
            return read_failure(path, exc), int(info.samplerate)
        finite = audio_problem(data) if data.size else "has zero samples"
        if finite is not None and "NaN" in finite:
            return f"has {finite}", int(info.samplerate)
    return None, int(info.samplerate)


def preflight_audio(data_specs: Iterable[DataSpec], sample_rate: int = 16000, resample: bool = False,
                    num_threads: int = 8, read_samples: bool = False, what: str = "training") -> int:
    """Check every file of the ``sound`` lists before ``what`` starts.

    ``data_specs``: ESPnet's ``(path, name, type)`` triples. Raises :class:`BadAudioError` listing every
    rejected file; returns the number of files checked. ``read_samples`` also decodes every file and
    rejects NaN/Inf samples (decoding: they would silently decode to nothing)."""
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
            results = list(pool.map(lambda p: _probe(p, read_samples), [table[k] for k in keys]))
        checked += len(keys)
        for key, (problem, rate) in zip(keys, results):
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
            [f"{total} audio file(s) cannot be used; {what} did not start:"] + shown + more
            + ["Fix: repair or remove them (remove the lines, then utils/fix_data_dir.py <dir>); "
               "utils/validate_data_dir.py <dir> checks every sample of every file"]))
    return checked


# ============================================================================================= runs
def _check_init_params(args) -> None:
    from aqc.checkpoints import CheckpointError

    for init_param in getattr(args, "init_param", None) or []:
        path = Path(init_param.split(":", 1)[0])
        if not path.is_file():
            raise CheckpointError(f"--init_param {init_param}: {path} does not exist")


def _check_resume(args) -> None:
    from aqc.checkpoints import check_checkpoint_readable

    from .checkpoint_io import check_resume_config

    output_dir = getattr(args, "output_dir", None)
    if getattr(args, "resume", False) and output_dir is not None:
        checkpoint = Path(output_dir) / "checkpoint.pth"
        if checkpoint.exists():
            check_checkpoint_readable(checkpoint)
            if hasattr(args, "model_conf") and getattr(args, "model", None) == "aqc":
                check_resume_config(Path(output_dir), args.model_conf)


def _check_data(args, read_samples: bool, what: str) -> None:
    for split in ("train", "valid"):
        check_data_lists(split, [tuple(s[:3]) for s in getattr(args, f"{split}_data_path_and_name_and_type", None)
                                 or []])
    if getattr(args, "check_audio", True):
        preflight_audio(sound_specs(args), getattr(args, "sample_rate", 16000), getattr(args, "resample", False),
                        read_samples=read_samples, what=what)


def preflight_ssl(task, args) -> None:
    """Pre-training (:class:`aqc.espnet.ssl.AQCSSLTask`): see the module docstring."""
    check_ngpu(args.ngpu)
    check_conf_types(task, args)
    check_plot_every_epochs(args)
    check_collate_conf(getattr(args, "collate_fn_conf", None))
    if getattr(args, "augmentation_conf", None) and not getattr(args, "collect_stats", False):
        from .collate import build_augmentation

        try:
            build_augmentation(args.augmentation_conf)  # unknown keys, missing/empty noise or RIR lists
        except ValueError as exc:
            raise ValueError(f"augmentation_conf: {exc}") from exc
    _check_resume(args)
    _check_init_params(args)
    _check_data(args, read_samples=False, what="training")


def preflight_asr(task, args) -> None:
    """Fine-tuning (ESPnet's ASR task with the aqc frontend): see the module docstring."""
    check_ngpu(args.ngpu)
    check_conf_types(task, args)
    check_plot_every_epochs(args)
    token_list = getattr(args, "token_list", None)
    if isinstance(token_list, str) and not os.path.isfile(token_list):
        raise FileNotFoundError(f"--token_list {token_list} does not exist (stage 3 of a recipe writes it)")
    _check_resume(args)
    _check_init_params(args)
    _check_data(args, read_samples=False, what="fine-tuning")


def dataclass_defaults(cls: type) -> Dict[str, Any]:
    """Defaults of a dataclass's fields (for ``option_defaults`` of classes configured by one)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out
