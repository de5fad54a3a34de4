"""Reading other toolkits' checkpoints without their code, and without running code from the file.

fairseq checkpoints are ``torch.save`` pickles that may hold omegaconf ``DictConfig`` objects,
``argparse.Namespace`` (old checkpoints), fairseq enums and dataclass types. Unpickling them the
ordinary way would import omegaconf and fairseq and run whatever the pickle names. Here a restricted
unpickler resolves only a short allow-list of harmless globals (tensor rebuilding, plain containers);
every other global becomes an inert placeholder that records its constructor arguments and state.
:func:`to_plain` then turns the placeholders for omegaconf containers, omegaconf value nodes,
``argparse.Namespace`` and enums back into plain dicts, lists and values.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
import types
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

PathLike = Union[str, os.PathLike]


class CheckpointReadError(ValueError):
    """The file is not a torch checkpoint this module can read."""


# ----------------------------------------------------------------------------------- placeholders
class Opaque:
    """Stands in for a global the allow-list does not resolve; never runs any code of the original."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):  # REDUCE calls cls(*args); __new__ already kept them
        pass

    def __setstate__(self, state):
        self.state = state

    def __getitem__(self, item):  # typing generics (Tuple[float, ...]) are pickled as getitem calls
        return self

    def __repr__(self) -> str:
        return f"<{self.qualname}>"


_OPAQUE_TYPES: Dict[str, type] = {}


def _opaque_type(module: str, name: str) -> type:
    qualname = f"{module}.{name}"
    if qualname not in _OPAQUE_TYPES:
        _OPAQUE_TYPES[qualname] = type(name, (Opaque,), {"qualname": qualname, "__module__": __name__})
    return _OPAQUE_TYPES[qualname]


def _reconstructor(cls, base, state):
    # copyreg._reconstructor (pickle protocols 0/1) would call base.__new__(cls); only placeholders
    # and plain containers are allowed to be built this way.
    if isinstance(cls, type) and issubclass(cls, Opaque):
        return cls.__new__(cls)
    if cls in (dict, list, object):
        return cls() if state is None else cls(state)
    raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r}")


def _getitem(obj, key):
    # Pickled type annotations (typing.Tuple[float, ...], tuple[int]) arrive as getitem calls; they
    # carry no data, so a placeholder stands for the result instead of evaluating them.
    if isinstance(obj, (dict, list, tuple)):
        return obj[key]
    return _opaque_type("typing", "Generic")()


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    allowed: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("copy_reg", "_reconstructor"): _reconstructor,
        ("_operator", "getitem"): _getitem,
        ("operator", "getitem"): _getitem,
        ("_codecs", "encode"): lambda text, encoding="utf-8": text.encode(encoding),  # bytes in protocol 2
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("torch", "Tensor"): torch.Tensor,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    }
    if hasattr(torch._utils, "_rebuild_parameter_with_state"):
        allowed[("torch._utils", "_rebuild_parameter_with_state")] = torch._utils._rebuild_parameter_with_state
    if hasattr(torch._tensor, "_rebuild_from_type_v2"):
        allowed[("torch._tensor", "_rebuild_from_type_v2")] = torch._tensor._rebuild_from_type_v2
    builtin_types = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset,
                     "int": int, "float": float, "str": str, "bytes": bytes, "bool": bool,
                     "complex": complex, "slice": slice, "bytearray": bytearray}
    for module in ("builtins", "__builtin__"):
        for name, obj in builtin_types.items():
            allowed[(module, name)] = obj
        allowed[(module, "Ellipsis")] = Ellipsis
        allowed[(module, "long")] = int  # Python 2 names of protocol-2 pickles
        allowed[(module, "unicode")] = str
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals (and torch dtypes); everything else becomes :class:`Opaque`."""

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return _opaque_type(module, name)


# torch.load takes a "pickle module": it needs Unpickler and load (legacy, non-zip files).
restricted_pickle = types.ModuleType("aqc_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
restricted_pickle.__version__ = "1"


def read_checkpoint(path: PathLike) -> Any:
    """Load ``path`` on the CPU with the restricted unpickler and return it as plain Python."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    except Exception as exc:  # noqa: BLE001 - any failure here means: not a readable checkpoint
        raise CheckpointReadError(f"cannot read {path} as a torch checkpoint ({type(exc).__name__}: {exc})"
                                  ) from exc
    return to_plain(obj)


def read_checkpoint_bytes(data: bytes) -> Any:
    """:func:`read_checkpoint` for an in-memory checkpoint (tests, streams)."""
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    return to_plain(obj)


# ---------------------------------------------------------------------------------- to plain data
_OMEGACONF_CONTAINERS = ("omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig")


def _opaque_to_plain(obj: Opaque, memo: Dict[int, Any]) -> Any:
    state = obj.state if isinstance(obj.state, dict) else {}
    if obj.qualname in _OMEGACONF_CONTAINERS:
        return to_plain(state.get("_content"), memo)
    if obj.qualname.startswith("omegaconf.nodes."):  # AnyNode, StringNode, IntegerNode, EnumNode, ...
        return to_plain(state.get("_val"), memo)
    if obj.qualname == "argparse.Namespace":
        return to_plain(state, memo)
    if obj.state is None and len(obj.args) == 1 and not obj.kwargs:
        return to_plain(obj.args[0], memo)  # enums pickle as cls(value)
    return obj  # metadata, types and other objects stay placeholders


def to_plain(obj: Any, memo: Optional[Dict[int, Any]] = None) -> Any:
    """Placeholders of omegaconf containers/nodes, Namespaces and enums -> plain values (recursively)."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, Opaque):
        out = _opaque_to_plain(obj, memo)
    elif isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        memo[id(obj)] = out
        for k, v in obj.items():
            out[to_plain(k, memo)] = to_plain(v, memo)
    elif isinstance(obj, list):
        out = []
        memo[id(obj)] = out
        out.extend(to_plain(v, memo) for v in obj)
    elif isinstance(obj, tuple):
        out = tuple(to_plain(v, memo) for v in obj)
    else:
        out = obj
    memo[id(obj)] = out
    return out


_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def resolve_interpolations(root: Dict[str, Any], value: Any, depth: int = 0) -> Any:
    """Resolve an omegaconf absolute interpolation such as ``${optimization.max_update}`` against
    ``root``; anything else (and an unresolvable reference) is returned unchanged."""
    if not isinstance(value, str) or depth > 8:
        return value
    match = _INTERPOLATION.match(value)
    if not match:
        return value
    node: Any = root
    for part in match.group(1).split("."):
        if not isinstance(node, dict) or part not in node:
            return value
        node = node[part]
    return resolve_interpolations(root, node, depth + 1)
