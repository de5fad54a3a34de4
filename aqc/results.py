"""RESULTS.md writer shared by the recipes.

Inputs, all optional except the experiment directory:

* test sets: ``(name, scores.json)`` pairs as written by ``python -m aqc.bin.score``; when none are given
  they are found as ``<exp_dir>/**/scores.json`` (the name is the directory above ``score/``, e.g.
  ``exp/asr/decode_test_clean/score/scores.json`` -> ``decode_test_clean``).
* configs: paths of the YAML files used; linked relative to RESULTS.md.
* stage timings: a ``stage_times.tsv`` file, one line per run stage, **tab-separated**
  ``<stage>\\t<name>\\t<seconds>``; lines starting with ``#`` and blank lines are ignored, and a stage
  listed twice (re-run) keeps its last time. A bash recipe appends a line with::

      printf '%s\\t%s\\t%s\\n' "${stage}" data_prep "${SECONDS}" >> "${exp_dir}/stage_times.tsv"

  or Python calls :func:`append_stage_time`.
* images: training curves ESPnet writes as ``exp/<dir>/images/*.png`` (embedded when their name is in
  ``embed``, linked otherwise) and tensorboard directories (``exp/<dir>/tensorboard``), linked.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]
DEFAULT_EMBED = ("loss", "acc", "optim0_lr0")


@dataclass
class StageTime:
    stage: str
    name: str
    seconds: float


def append_stage_time(path: PathLike, stage: Union[int, str], name: str, seconds: float) -> None:
    """Append one ``stage<TAB>name<TAB>seconds`` line (creating the file)."""
    if "\t" in name or "\n" in name:
        raise ValueError(f"stage name {name!r} must not contain tabs or newlines")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{stage}\t{name}\t{seconds:.1f}\n")


def read_stage_times(path: PathLike) -> List[StageTime]:
    """Read ``stage_times.tsv``; a stage listed again (a re-run) replaces the earlier line."""
    times: Dict[str, StageTime] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                raise ValueError(
                    f"{path}:{lineno}: expected 'stage<TAB>name<TAB>seconds', got {line!r}; "
                    f"separate the three fields with tabs"
                )
            try:
                seconds = float(parts[2])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: seconds {parts[2]!r} is not a number") from None
            times.pop(parts[0], None)  # keep the re-run's position too: last one wins
            times[parts[0]] = StageTime(parts[0], parts[1], seconds)
    return list(times.values())


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def set_name_from_path(scores_json: PathLike) -> str:
    p = Path(scores_json)
    return p.parent.parent.name if p.parent.name == "score" else p.parent.name


def find_test_sets(exp_dir: PathLike) -> List[Tuple[str, Path]]:
    found = sorted(Path(exp_dir).rglob("scores.json"))
    return [(set_name_from_path(p), p) for p in found]


def _rate(entry: Dict) -> str:
    rate = entry.get("rate")
    if rate is None:
        return "inf" if entry.get("errors", 0) else "0.00"
    return f"{rate:.2f}"


def _link(target: PathLike, base: Path) -> str:
    """A Markdown-friendly path to ``target`` relative to the directory holding RESULTS.md."""
    rel = os.path.relpath(Path(target).resolve(), base.resolve())
    return Path(rel).as_posix().replace(" ", "%20")


def scores_table(test_sets: Sequence[Tuple[str, PathLike]], base: Path) -> List[str]:
    lines = [
        "| test set | WER | CER | #utts | #words | #chars | sub | del | ins | SER | missing hyps | scores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, path in test_sets:
        with open(path, encoding="utf-8") as f:
            s = json.load(f)
        w, c = s["wer"], s["cer"]
        n = s["num_utts"]
        ser = 100.0 * s.get("sentence_errors", 0) / n if n else 0.0
        lines.append(
            f"| {name} | {_rate(w)} | {_rate(c)} | {n} | {w['ref_len']} | {c['ref_len']} | "
            f"{w['sub']} | {w['del']} | {w['ins']} | {ser:.2f} | {s.get('num_missing', 0)} | "
            f"[scores.json]({_link(path, base)}) |"
        )
    return lines


def stage_table(times: Sequence[StageTime]) -> List[str]:
    lines = ["| stage | name | time (h:mm:ss) | seconds |", "|---|---|---:|---:|"]
    for t in times:
        lines.append(f"| {t.stage} | {t.name} | {format_duration(t.seconds)} | {t.seconds:.1f} |")
    total = sum(t.seconds for t in times)
    lines.append(f"| | **total** | **{format_duration(total)}** | {total:.1f} |")
    return lines


def image_lines(images: Iterable[PathLike], base: Path, embed: Sequence[str]) -> List[str]:
    lines: List[str] = []
    by_dir: Dict[Path, List[Path]] = {}
    for img in sorted(Path(p) for p in images):
        by_dir.setdefault(img.parent, []).append(img)
    for d, imgs in by_dir.items():
        lines.append(f"- `{_link(d, base)}`:")
        linked = [i for i in imgs if i.stem not in embed]
        for i in imgs:
            if i.stem in embed:
                lines.append(f"\n  ![{i.stem}]({_link(i, base)})\n")
        if linked:
            lines.append("  " + " · ".join(f"[{i.stem}]({_link(i, base)})" for i in linked))
    return lines


def environment_lines(repo_dir: Optional[PathLike] = None) -> List[str]:
    """Date, platform and package versions (from metadata: importing torch here would be slow)."""
    lines = [
        f"- date: `{datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %z')}`",
        f"- python: `{platform.python_version()}` on `{platform.platform()}`",
    ]
    versions = []
    for pkg in ("aqc", "espnet", "torch", "torchaudio"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            pass
    if versions:
        lines.append(f"- packages: `{', '.join(versions)}`")
    commit = git_commit(repo_dir)
    if commit:
        lines.append(f"- git commit: `{commit}`")
    return lines


def git_commit(repo_dir: Optional[PathLike] = None) -> Optional[str]:
    """``HEAD``'s hash (``-dirty`` if the tree has changes), or None outside a git checkout."""
    cwd = str(repo_dir or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"],  # read-only
            cwd=cwd, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def make_results(
    out: PathLike,
    exp_dir: PathLike,
    test_sets: Optional[Sequence[Tuple[str, PathLike]]] = None,
    configs: Sequence[PathLike] = (),
    stage_times: Optional[PathLike] = None,
    images: Optional[Sequence[PathLike]] = None,
    tensorboard_dirs: Optional[Sequence[PathLike]] = None,
    title: Optional[str] = None,
    notes: Optional[str] = None,
    embed: Sequence[str] = DEFAULT_EMBED,
    environment: bool = True,
) -> str:
    """Write RESULTS.md to ``out`` and return its text.

    ``test_sets``, ``images`` and ``tensorboard_dirs`` default to what is found under ``exp_dir``
    (``**/scores.json``, ``*/images/*.png``, ``*/tensorboard``); ``stage_times`` to
    ``<exp_dir>/stage_times.tsv`` when that exists.
    """
    out = Path(out)
    base = out.parent
    exp = Path(exp_dir)
    if test_sets is None:
        test_sets = find_test_sets(exp)
    if images is None:
        images = sorted(exp.glob("*/images/*.png")) + sorted(exp.glob("images/*.png"))
    if tensorboard_dirs is None:
        tensorboard_dirs = sorted(p for p in exp.glob("*/tensorboard") if p.is_dir())
    if stage_times is None and (exp / "stage_times.tsv").is_file():
        stage_times = exp / "stage_times.tsv"

    lines = [
        "<!-- Generated by `python -m aqc.bin.make_results`; edit the notes, not the tables. -->",
        f"# {title or 'RESULTS'}",
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    if environment:
        lines += ["## Environment", "", *environment_lines(), ""]
    lines += [f"## `{_link(exp, base)}`", ""]
    if configs:
        lines += ["### Configs", ""]
        lines += [f"- [{Path(c).name}]({_link(c, base)})" for c in configs]
        lines.append("")
    lines += ["### WER / CER", ""]
    if test_sets:
        lines += scores_table(test_sets, base)
        lines += [
            "",
            "WER over words, CER over characters without spaces (see `aqc/scoring.py`); "
            "missing hypotheses are scored as all deletions.",
        ]
    else:
        lines.append(f"No scores.json found under `{_link(exp, base)}` (run the scoring stage).")
    lines.append("")
    if stage_times:
        lines += ["### Stage timings", "", *stage_table(read_stage_times(stage_times)), ""]
    if images or tensorboard_dirs:
        lines += ["### Training curves", ""]
        lines += image_lines(images or [], base, embed)
        lines += [f"- tensorboard: `tensorboard --logdir {_link(d, base)}`" for d in tensorboard_dirs or []]
        lines.append("")
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text

