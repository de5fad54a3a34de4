#!/usr/bin/env python3
"""Print a canonical record of what a recipe stage depends on, or say how two records differ.

    utils/stage_inputs.py opt:nbpe=100 path:musan_root=/data/musan yaml:config=conf/pretrain.yaml \\
        file:noise_list=data/augment/noise/wav.scp dir:test=dump/test tree:local=local
    utils/stage_inputs.py --diff OLD_RECORD NEW_RECORD

Each spec is ``KIND:NAME=VALUE``; the record has one ``name<TAB>value-or-digest`` line per input, sorted:

* ``opt``   the value itself (tabs, newlines and backslashes escaped)
* ``path``  the value as an absolute path (empty stays empty)
* ``yaml``  sha256 of the parsed YAML written as canonical JSON: comments and formatting do not count,
  and another file with the same content is the same input; ``absent`` if there is no such file
* ``yamlkey`` (``yamlkey:NAME=PATH#KEY``) the same for one top-level key's value only, for a stage that
  reads nothing else of the file (a random-init baseline reads a pre-training config's ``model_conf``)
* ``file``  sha256 of the file's bytes, or ``absent``
* ``stat``  a large file (an n-gram LM of gigabytes) by absolute path, size and modification time, not
  its bytes; ``absent`` if there is no such file
* ``dir``   one line per Kaldi file of a data directory that exists (``NAME/wav.scp`` ... : wav.scp,
  segments, text, utt2spk, utt2num_samples), or ``NAME<TAB>absent`` when there is none
* ``tree``  one line per file below a folder (``NAME/<relative path>``), e.g. a recipe's local/ scripts

The audio a ``wav.scp`` points at is not read: a corpus changed in place looks unchanged.

``--diff`` prints one line naming the inputs that differ (changed, new, gone), nothing when the records
are the same. An empty old record is one written before records existed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from aqc.stage_records import parse_record, sha256_file

KALDI_FILES = ("wav.scp", "segments", "text", "utt2spk", "utt2num_samples")
KINDS = ("opt", "path", "yaml", "yamlkey", "file", "stat", "dir", "tree")
ABSENT = "absent"


class SpecError(ValueError):
    pass


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def yaml_digest(path: Path, key: Optional[str] = None) -> str:
    import yaml

    if not path.is_file():
        return ABSENT
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        problem = str(e).replace("\n", " ")
        raise SpecError(f"{path} is not valid YAML ({problem}); fix the file") from None
    if key is not None:
        content = {} if content is None else content  # an empty file: a mapping without the key
        if not isinstance(content, dict):
            raise SpecError(f"{path} is not a YAML mapping, so it has no key {key!r}; fix the file")
        content = content.get(key)  # a missing key is an input too (null): adding it later is a change
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "yaml-sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def tree_lines(name: str, root: Path) -> List[Tuple[str, str]]:
    if not root.is_dir():
        return [(name, ABSENT)]
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            if path.is_file() and not fname.endswith(".pyc"):
                lines.append((f"{name}/{path.relative_to(root).as_posix()}", sha256_file(path)))
    return lines or [(name, "empty")]


def record_lines(spec: str) -> List[Tuple[str, str]]:
    kind, sep, rest = spec.partition(":")
    name, eq, value = rest.partition("=")
    if not sep or not eq or kind not in KINDS or not name or any(c in name for c in "\t\n"):
        raise SpecError(f"bad spec {spec!r}: expected KIND:NAME=VALUE with KIND one of {', '.join(KINDS)}")
    if kind == "opt":
        return [(name, escape(value))]
    if kind == "path":
        return [(name, escape(os.path.abspath(value)) if value else "")]
    if kind == "yamlkey":
        file_part, hash_sign, key = value.rpartition("#")
        if not hash_sign or not file_part or not key:
            raise SpecError(f"bad spec {spec!r}: expected yamlkey:NAME=PATH#KEY")
        return [(name, yaml_digest(Path(file_part), key))]
    path = Path(value)
    if kind == "yaml":
        return [(name, yaml_digest(path))]
    if kind == "file":
        return [(name, sha256_file(path) if path.is_file() else ABSENT)]
    if kind == "stat":
        if not path.is_file():
            return [(name, ABSENT)]
        info = path.stat()
        return [(name, f"{escape(os.path.abspath(value))} size={info.st_size} mtime_ns={info.st_mtime_ns}")]
    if kind == "dir":
        lines = [(f"{name}/{f}", sha256_file(path / f)) for f in KALDI_FILES if (path / f).is_file()]
        return lines or [(name, ABSENT)]
    return tree_lines(name, path)


def make_record(specs: List[str]) -> str:
    entries: Dict[str, str] = {}
    for spec in specs:
        for name, value in record_lines(spec):
            if entries.get(name, value) != value:  # the same input listed twice (e.g. one set in two roles) is fine
                raise SpecError(f"input {name!r} is given twice with different values; give each input once")
            entries[name] = value
    return "".join(f"{name}\t{entries[name]}\n" for name in sorted(entries))


def describe_diff(old_text: str, new_text: str) -> str:
    """One line naming what differs; empty if nothing does."""
    old, new = parse_record(old_text), parse_record(new_text)
    if old == new:
        return ""
    if not old:
        return "the marker holds no record of its inputs (written by an older aqc)"
    parts = []
    changed = [n for n in sorted(new) if n in old and old[n] != new[n]]
    if changed:
        parts.append("changed: " + ", ".join(changed))
    added = [n for n in sorted(new) if n not in old]
    if added:
        parts.append("new: " + ", ".join(added))
    removed = [n for n in sorted(old) if n not in new]
    if removed:
        parts.append("gone: " + ", ".join(removed))
    return "; ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diff", nargs=2, metavar=("OLD_RECORD", "NEW_RECORD"),
                        help="compare two record files instead of making one")
    parser.add_argument("specs", nargs="*", help="KIND:NAME=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.diff:
            old, new = (Path(p).read_text(encoding="utf-8") for p in args.diff)
            line = describe_diff(old, new)
            if line:
                print(line)
            return 0
        sys.stdout.write(make_record(args.specs))
    except (SpecError, OSError, UnicodeDecodeError) as e:
        print(f"stage_inputs.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
