"""How aqc's entry points report a problem the user can fix: one ``ERROR:`` line, exit status 2.

:func:`run_cli` wraps an entry point's ``main``. A known user error prints ``ERROR: <message>`` (the
message names the file or the key, and the fix) and exits with status 2; ``AQC_DEBUG=1`` re-raises it
instead (full traceback). Known user errors are :class:`AQCUserError` and its subclasses (bad audio,
unreadable or refused checkpoints, a full disk, too many non-finite losses), ``ValueError``,
``FileNotFoundError``, :class:`aqc.models.model.CollapseError`, a noise-file error, an ``OSError`` for a
full disk or quota, a ``state_dict`` size mismatch such as a token list that does not fit the model, and
an unexpected keyword in a ``*_conf`` section. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from typing import Any, Callable, List, Optional, Tuple

DEBUG_ENV = "AQC_DEBUG"
EXIT_USER_ERROR = 2
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class AQCUserError(Exception):
    """A problem the user can fix (the message names the file or key, and the fix)."""


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


def exception_text(exc: BaseException) -> str:
    """``str(exc)``, or its arguments when ``__str__`` itself fails.

    An exception re-raised from a DataLoader worker is rebuilt as ``type(message)``; for types whose
    constructor takes something else (soundfile's ``LibsndfileError(code)``) ``str()`` then raises."""
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the original error
        return " ".join(str(a) for a in exc.args) or type(exc).__name__


def worker_message(exc: BaseException) -> str:
    """The original message of an exception re-raised from a DataLoader worker (else its text)."""
    text = exception_text(exc)
    if "Original Traceback" not in text:
        return text
    tail = text.split("Original Traceback", 1)[1]
    marker = f"\n{type(exc).__name__}: "
    pos = tail.rfind(marker)
    return tail[pos + len(marker):].strip() if pos >= 0 else text.strip().splitlines()[-1]


def no_space_message(exc: OSError) -> str:
    where = os.path.dirname(os.path.abspath(exc.filename)) if exc.filename else "the output device"
    what = f" while writing {exc.filename}" if exc.filename else ""
    return (f"no space left on {where}{what} ({os.strerror(exc.errno)}). Fix: free space there (or write "
            "elsewhere), then rerun; training continues from its last finished epoch with --resume true")


_SOUNDFILE_OPEN = re.compile(r"Error opening '(.+?)': (.+)")


def soundfile_message(exc: BaseException) -> Optional[str]:
    """soundfile's error for a file, in words (it reports a missing file as "System error")."""
    if type(exc).__module__.split(".")[0] != "soundfile":
        return None
    lines = worker_message(exc).strip().splitlines()
    text = lines[-1].split("LibsndfileError: ", 1)[-1] if lines else ""
    m = _SOUNDFILE_OPEN.search(text)
    if m and not os.path.exists(m.group(1)):
        return f"audio file not found: {m.group(1)}"
    if m:
        return f"{m.group(1)} cannot be read as audio ({m.group(2)}); check it with utils/validate_data_dir.py"
    return text or None


def user_message(exc: BaseException) -> Optional[str]:
    """The message to print for a known user error, or None for anything else (a bug: traceback)."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return no_space_message(exc)
    message = soundfile_message(exc)
    if message is not None:
        return message
    if isinstance(exc, (RuntimeError,) + _user_error_types()):
        text = worker_message(exc)
        summary = summarize_state_dict_error(text)
        if summary is not None:  # e.g. load_model_file's "<path>: weights do not fit ...: Error(s) in ..."
            prefix = text.split("Error(s) in loading state_dict")[0].strip()
            return f"{prefix} {summary}" if prefix else summary
    if isinstance(exc, TypeError):
        m = _UNEXPECTED_KW.search(exception_text(exc))
        if m:
            return (f"unknown option {m.group(2)!r} for {m.group(1)}: remove it from its *_conf section "
                    f"(check the spelling against {m.group(1)}'s documented options)")
        m = _MISSING_ARG.search(exception_text(exc))
        if m:
            return f"{m.group(1)} needs the option(s) {m.group(2)}: add them to its *_conf section"
    if isinstance(exc, _user_error_types()):
        if isinstance(exc, FileNotFoundError) and exc.filename is not None and str(exc.filename) not in str(exc):
            return f"file not found: {exc.filename}"
        return worker_message(exc)
    return None


def run_cli(main: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an entry point's ``main``; a known user error prints ``ERROR: ...`` and exits with status 2.

    ``AQC_DEBUG=1`` re-raises instead (full traceback). Unknown exceptions (bugs) propagate unchanged.
    """
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


def check_ngpu(ngpu: int) -> None:
    """``--ngpu N`` needs N GPUs that PyTorch can see; say so before anything starts."""
    if ngpu <= 0:
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise AQCUserError(f"--ngpu {ngpu}, but PyTorch sees no GPU on this machine (torch.cuda.is_available() is "
                           "False: no GPU, no driver, or a CPU-only torch build). Fix: --ngpu 0 runs on the CPU")
    if available < ngpu:
        raise AQCUserError(f"--ngpu {ngpu}, but PyTorch sees only {available} GPU(s) (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}). Fix: --ngpu {available}")
