"""ESPnet's ``@typechecked`` functions instrumented once, then read from a disk cache at every import.

typeguard 4 instruments a decorated function when its module is imported: it parses the module's whole
source, rewrites that function with the checks, and compiles the whole module again; once per decorated
function. ESPnet decorates about 180 functions on the import path of a training, so on 2 CPU cores this
took 10 of the 20 s of ``import espnet2.tasks.ssl``, in every training, decoding and scoring process.

:func:`install` replaces typeguard's ``instrument`` with :func:`instrument`, which does the same work on a
cache miss and stores the instrumented code object (``marshal``, as Python's own ``.pyc`` files do). The
key holds the module's source text, the function's name and first line, and the versions of Python and
typeguard, so an edited or upgraded module is instrumented afresh. The code that runs, and so every type
check ESPnet makes, is the one typeguard compiles.

``AQC_TYPEGUARD_CACHE``: the cache folder (default ``$XDG_CACHE_HOME/aqc/typeguard``, else
``~/.cache/aqc/typeguard``); ``off`` instruments every time, as typeguard alone does. A folder that cannot
be written, or that others can write (the cache runs the code it reads), costs only the time: the
functions are instrumented as usual. The module re-implements typeguard 4's private ``instrument`` around
the cache (written against 4.6), with typeguard's own helpers; another major version is left alone.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import marshal
import os
import stat
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from types import CodeType, FrameType, FunctionType
from typing import ForwardRef, List, Optional, Tuple, Union

ENV = "AQC_TYPEGUARD_CACHE"
_TYPEGUARD = version("typeguard")
try:  # typeguard 4's internals, which this module re-implements around the cache (written against 4.6)
    import typeguard._decorators as decorators
    from typeguard._config import global_config
    from typeguard._transformer import TypeguardTransformer

    _ORIGINAL = decorators.instrument
    SUPPORTED = _TYPEGUARD.split(".")[0] == "4"
except (ImportError, AttributeError):
    SUPPORTED = False


def cache_dir() -> Optional[Path]:
    setting = os.environ.get(ENV, "")
    if setting == "off":
        return None
    if setting:
        return Path(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aqc" / "typeguard"


def install() -> None:
    """typeguard's ``@typechecked`` uses :func:`instrument` from now on (modules imported later); with
    another major version of typeguard than 4, nothing changes."""
    if SUPPORTED and cache_dir() is not None:
        decorators.instrument = instrument


def _key(f: FunctionType, source: str) -> str:
    text = "\0".join([sys.version, _TYPEGUARD,
                      f.__code__.co_filename, f.__qualname__, str(f.__code__.co_firstlineno), source])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _private(folder: Path) -> bool:
    """The cache runs the code it reads, so it reads only a folder that this user owns and no one else
    can write (as ``~/.cache`` is); anywhere else every function is instrumented as usual."""
    try:
        info = folder.stat()
    except OSError:
        return False
    return info.st_uid == os.getuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _load(path: Path) -> Optional[Tuple[CodeType, List[str]]]:
    if not _private(path.parent):
        return None
    try:
        if path.stat().st_uid != os.getuid():
            return None
        code, names = marshal.loads(path.read_bytes())
    except (OSError, EOFError, ValueError, TypeError):  # absent, or not a file this module wrote
        return None
    if not isinstance(code, CodeType) or not isinstance(names, tuple):
        return None
    return code, list(names)


def _store(path: Path, code: CodeType, names: List[str]) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _private(path.parent):
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps((code, tuple(sorted(names)))))
        os.replace(tmp, path)  # whole or absent, also with other processes writing the same entry
    except OSError:
        pass


def _instrumented_code(f: FunctionType, path: List[str], source: str) -> Union[Tuple[CodeType, List[str]], str]:
    """typeguard's rewrite of ``f``: its code object and the names its annotations use, or why not."""
    module_ast = ast.parse(source)
    transformer = TypeguardTransformer(path, f.__code__.co_firstlineno)
    transformer.visit(module_ast)
    if not transformer.target_node or transformer.target_lineno is None:
        return "instrumentor did not find the target function"
    if global_config.debug_instrumentation:
        print(f"Source code of {f.__qualname__}() after instrumentation:\n{ast.unparse(transformer.target_node)}",
              file=sys.stderr)
    code = decorators.find_target_function(compile(module_ast, f.__code__.co_filename, "exec", dont_inherit=True),
                                           path, transformer.target_lineno)
    if code is None:
        return "cannot find the target function in the AST"
    return code, sorted(transformer.names_used_in_annotations)


def instrument(f) -> Union[FunctionType, str]:
    """typeguard's ``instrument``, with the rewritten code read from the cache when it is there.

    Called by ``typechecked`` directly (as typeguard's own is): the closure of a function whose
    annotations name local variables is read from the frame that called ``typechecked``."""
    if (not getattr(f, "__code__", None) or not getattr(f, "__module__", None) or hasattr(f, "__wrapped__")
            or f.__code__.co_filename == "<stdin>"):
        return _ORIGINAL(f)  # typeguard's reasons for leaving it alone
    path = [part for part in f.__qualname__.split(".") if part != "<locals>"]
    source = inspect.getsource(sys.modules[f.__module__])
    folder = cache_dir()  # None: turned off after install()
    entry_file = None if folder is None else folder / f"{_key(f, source)}.bin"
    entry = None if entry_file is None or global_config.debug_instrumentation else _load(entry_file)
    if entry is None:
        entry = _instrumented_code(f, path, source)
        if isinstance(entry, str):
            return entry
        if entry_file is not None:
            _store(entry_file, *entry)
    code, annotation_names = entry

    closure = f.__closure__
    if code.co_freevars != f.__code__.co_freevars:
        caller: FrameType = inspect.currentframe().f_back.f_back  # typechecked's caller
        cells = []
        for name in code.co_freevars:
            if name in annotation_names:  # a local type named in an annotation: its value now
                cells.append(decorators.make_cell(caller.f_locals.get(name) or ForwardRef(name)))
            else:
                cells.append(f.__closure__[f.__code__.co_freevars.index(name)])
        closure = tuple(cells)

    new = FunctionType(code, f.__globals__, f.__name__, closure=closure)
    new.__module__, new.__name__, new.__qualname__ = f.__module__, f.__name__, f.__qualname__
    new.__doc__, new.__defaults__, new.__kwdefaults__ = f.__doc__, f.__defaults__, f.__kwdefaults__
    if sys.version_info >= (3, 12):
        new.__type_params__ = f.__type_params__
    if sys.version_info >= (3, 14):
        new.__annotate__ = f.__annotate__
    else:
        new.__annotations__ = f.__annotations__
    return new
