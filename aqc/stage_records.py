"""The records recipe stage markers hold (``<dir>/.done.N``): ``name<TAB>value`` lines, one per input.

``utils/stage_inputs.py`` writes them; ``aqc.results`` reads them to tell which runs share their inputs and
whether a run's upstream is still the file it was fine-tuned from. Both take the format from here.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict


def sha256_file(path: Path) -> str:
    """A file's bytes as a record holds them: ``sha256:<hex>``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


def parse_record(text: str) -> Dict[str, str]:
    """A record's ``name -> value``; blank lines are skipped."""
    entries = {}
    for line in text.splitlines():
        if line.strip():
            name, _, value = line.partition("\t")
            entries[name] = value
    return entries
