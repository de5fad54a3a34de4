"""RESULTS.md writer shared by the recipes.

Inputs, all optional except the experiment directory:

* test sets: ``(name, scores.json)`` pairs as written by ``python -m aqc.bin.score``; when none are given
  they are found as ``<exp_dir>/**/scores.json`` (the name is the directory above ``score/``, e.g.
  ``exp/asr/decode_test_clean/score/scores.json`` -> ``decode_test_clean``).
* configs: paths of the YAML files used; linked relative to RESULTS.md.
* stage timings: a ``stage_times.tsv`` file, one line per run stage, **tab-separated**
  ``<stage>\\t<name>\\t<seconds>``; lines starting with ``#`` and blank lines are ignored, and a stage
  listed twice under the same name (a re-run) keeps its last time; the same stage under other names
  (one per system of a comparison, e.g. ``CTC fine-tuning (exp/asr_x)``) keep a line each. A bash
  recipe appends a line with::

      printf '%s\\t%s\\t%s\\n' "${stage}" data_prep "${SECONDS}" >> "${exp_dir}/stage_times.tsv"

  or Python calls :func:`append_stage_time`.
* per test set, below the table: the size of the reference it was scored against, how many utterances had
  no hypothesis, and, when a ``token_coverage.json`` lies beside ``scores.json``, how many reference tokens
  are not in the model's token list. Directories under ``<exp_dir>/superseded/`` are never searched.
* systems: every ``<exp_dir>/asr_*`` directory with a scored test set is described from the files the
  run left (:func:`describe_system`): its pre-training (the method named after the paper's ablations,
  from the pre-training experiment's ``config.yaml``, or "none" for a randomly initialised upstream),
  the fine-tuning and decoding configs, and the intra-op thread counts its trainings ran with, from their
  ``train.log`` (:func:`thread_use`): a run is repeated bit for bit only on the same count. Systems whose
  upstreams were exported from one pre-training checkpoint (their ``aqc_model.<select>.pt.json``) are
  named together (:func:`shared_upstream_lines`): their runs with equal seeds are one experiment twice.
* seeds: when some system was fine-tuned more than once (``asr_<name>`` and ``asr_<name>_seed<N>``), a
  table of each system's mean and standard deviation per test set, and per test set a table of the
  differences between systems, marking those larger than the two spreads added (:func:`seed_lines`).
  When some system was also pre-trained more than once (``asr_<name>_pseed<P>`` and its ``_seed<N>``
  runs, as ``--pretrain_seeds`` writes them), a second table pools each system over all its pre-training
  and fine-tuning runs, and the differences are judged by those pooled spreads instead. Runs are averaged
  only when their stage markers (``.done.5``, and for the pooled table the pre-training's ``.done.4``)
  record the same inputs apart from the seeds; otherwise the group is shown "not averaged", naming the
  inputs that differ (a run left from before a config change, say).
* pre-training probes: every ``<exp_dir>/ssl_*/probe/scores.jsonl`` (:mod:`aqc.espnet.training_probe`)
  becomes a table of the probe's best-layer error per epoch, with the checkpoints exported as upstreams
  (``aqc_model.<select>.pt.json``) marked.
* images: training curves ESPnet writes as ``exp/<dir>/images/*.png`` (embedded when their name is in
  ``embed``, linked otherwise) and tensorboard directories (``exp/<dir>/tensorboard``), linked.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from aqc.stage_records import parse_record, sha256_file

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
    """Read ``stage_times.tsv``; a stage listed again under the same name (a re-run) replaces the earlier line."""
    times: Dict[Tuple[str, str], StageTime] = {}
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
            key = (parts[0], parts[1])
            times.pop(key, None)  # keep the re-run's position too: last one wins
            times[key] = StageTime(parts[0], parts[1], seconds)
    return list(times.values())


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def set_name_from_path(scores_json: PathLike) -> str:
    p = Path(scores_json)
    return p.parent.parent.name if p.parent.name == "score" else p.parent.name


SUPERSEDED = "superseded"  # <exp_dir>/superseded/: experiments a recipe moved aside when their inputs changed


def find_test_sets(exp_dir: PathLike) -> List[Tuple[str, Path]]:
    exp = Path(exp_dir)
    found = sorted(p for p in exp.rglob("scores.json") if SUPERSEDED not in p.relative_to(exp).parts)
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


def test_set_lines(test_sets: Sequence[Tuple[str, PathLike]], base: Path) -> List[str]:
    """Per scored set: how many utterances the reference holds and how many were decoded, and (from a
    ``token_coverage.json`` beside ``scores.json``, written by ``utils/token_coverage.py``) how many of
    its tokens the model cannot output."""
    lines = []
    for name, path in test_sets:
        with open(path, encoding="utf-8") as f:
            s = json.load(f)
        n, missing = s["num_utts"], s.get("num_missing", 0)
        ref = f" (every utterance of `{_link(s['ref'], base)}`)" if s.get("ref") else ""
        decoded = "all decoded" if not missing else f"{missing} without a hypothesis (scored as all deletions)"
        line = f"- {name}: {n} utterances{ref}, {decoded}"
        coverage = Path(path).parent / "token_coverage.json"
        if coverage.is_file():
            with open(coverage, encoding="utf-8") as f:
                c = json.load(f)
            k, total, unit = c["unknown"], c["tokens"], c["unit"]
            if k:
                examples = ", ".join(f"`{t}` ({m})" for t, m in c["examples"][:5])
                line += (f"; {k} of {total} {unit} ({100.0 * k / total:.2f} %) are not in the token list "
                         f"(never recognised), e.g. {examples}")
            else:
                line += f"; all {total} {unit} are in the token list"
        lines.append(line)
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


@dataclass
class System:
    """One fine-tuned model of a recipe and how it was made."""

    asr_dir: Path
    method: str
    ssl_dir: Optional[Path] = None
    pretrain_config: Optional[Path] = None
    upstream_choice: str = ""
    finetune_config: Optional[Path] = None
    decode_configs: Tuple[Path, ...] = ()
    # keys whose value in the linked config file is not what the run used (a command-line option, or the
    # file edited since): the link alone would misstate the run
    finetune_drift: Tuple[str, ...] = ()
    pretrain_drift: Tuple[str, ...] = ()
    # why the upstream file there now is not the one this model was fine-tuned from (pre-trained again, or
    # removed, after the fine-tuning): the run's scores describe an earlier pre-training
    upstream_changed: str = ""
    pretrain_threads: str = ""  # thread_use() of the pre-training and of the fine-tuning
    finetune_threads: str = ""
    # the pre-training checkpoint the upstream was exported from, and its update (its export record):
    # two systems with the same one fine-tuned from the same weights
    upstream_source: Optional[Tuple[str, int]] = None


def config_drift(file_conf: Dict, run_conf: Dict, prefix: str = "") -> List[str]:
    """Dotted keys of ``file_conf`` (a config file as it is now) whose values differ from ``run_conf`` (the
    ``config.yaml`` ESPnet wrote when the run started). Keys the file does not set are not compared."""
    drift = []
    for key, value in file_conf.items():
        name = f"{prefix}{key}"
        if key not in run_conf:
            drift.append(name)
        elif isinstance(value, dict) and isinstance(run_conf[key], dict):
            drift += config_drift(value, run_conf[key], f"{name}.")
        elif name == "best_model_criterion" and isinstance(value, list) and isinstance(run_conf[key], list) \
                and run_conf[key][:len(value)] == value:
            continue  # the pre-training probe appends its own criterion (aqc.espnet.training_probe)
        elif value != run_conf[key] and not (isinstance(value, (int, float)) and isinstance(run_conf[key], (int, float))
                                             and float(value) == float(run_conf[key])):
            drift.append(name)
    return drift


def _drift(config_file: Optional[Path], run_conf: Dict) -> Tuple[str, ...]:
    if config_file is None or not config_file.is_file():
        return ()
    file_conf = _read_yaml(config_file)
    return tuple(config_drift({k: v for k, v in file_conf.items() if k != "config"}, run_conf))


def _read_yaml(path: Path) -> Dict:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def pretraining_method(ssl_config: Dict) -> str:
    """The paper's name for a pre-training run, from its ``config.yaml``: data2vec, +A, +A+Q, or
    data2vec-aqc (+A+Q+C). A is the student-view augmentation (any probability above 0), Q the quantizer
    with the cross-contrastive terms, C the clustering of negatives."""
    from aqc.augment.config import AugmentationConfig
    from aqc.models.config import Data2VecAQCConfig

    defaults = {f.name: f.default for f in dataclasses.fields(AugmentationConfig)}
    aug = {**defaults, **(ssl_config.get("augmentation_conf") or {})}
    model = ssl_config.get("model_conf") or {}
    augmented = any(float(aug[k]) > 0 for k in ("gaussian_p", "reverb_p", "background_p"))
    quantizer = bool(model.get("use_quantizer", Data2VecAQCConfig.use_quantizer))
    clustering = quantizer and bool(model.get("use_clustering", Data2VecAQCConfig.use_clustering))
    if augmented and quantizer and clustering:
        return "data2vec-aqc"
    return "data2vec" + ("+A" if augmented else "") + ("+Q" if quantizer else "") + ("+C" if clustering else "")


THREADS_LINE = re.compile(r"intra-op threads: (?P<threads>[0-9]+)(?P<fixed>, fixed)?")
EPOCH_THREADS = re.compile(r"\[train\][^[]*?\bintra_op_threads=(?P<mean>[0-9.eE+-]+)")


def thread_use(exp_dir: PathLike) -> str:
    """The intra-op thread counts a training ran with, in words, from ``<exp_dir>/train.log`` (the recipe
    keeps every process's output there): its processes' start lines (``aqc.cpu_threads``: fixed or
    following the load) and each epoch's mean count (the training stat ``intra_op_threads``). Summing in
    another order changes a run's numbers, so one count throughout is repeatable bit for bit and a count
    that moved is not. "not recorded" for a run without that log or stat (made before either existed)."""
    log = Path(exp_dir) / "train.log"
    if not log.is_file():
        return "not recorded"
    starts: List[Tuple[int, bool]] = []
    means: List[float] = []
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            start = THREADS_LINE.search(line)
            if start:
                starts.append((int(start["threads"]), bool(start["fixed"])))
            if "epoch results:" in line:
                epoch = EPOCH_THREADS.search(line)
                if epoch:
                    means.append(float(epoch["mean"]))
    fixed = bool(starts) and all(is_fixed for _, is_fixed in starts) and len({n for n, _ in starts}) == 1
    if not means:
        return f"{starts[0][0]} (fixed)" if fixed else "not recorded"
    low, high = min(means), max(means)
    if high - low < 1e-3 and abs(low - round(low)) < 1e-3:
        count = int(round(low))
        return f"{count} (fixed)" if fixed else f"{count} throughout (AQC_NUM_THREADS={count} repeats it)"
    return (f"{low:.2f}-{high:.2f} per epoch: followed the machine's load, so not repeatable bit for bit "
            f"(AQC_NUM_THREADS=N fixes it)")


def describe_system(asr_dir: PathLike, base: PathLike = ".") -> System:
    """What made the fine-tuned model in ``asr_dir`` (an ESPnet ASR experiment with ``frontend: aqc``).

    Config paths in ESPnet's ``config.yaml`` are relative to where training ran (``base``)."""
    asr_dir, base = Path(asr_dir), Path(base)

    def resolve(p) -> Optional[Path]:
        if not p:
            return None
        p = Path(p)
        return p if p.is_absolute() else base / p

    decode_configs = tuple(sorted(asr_dir.glob("decode_*/config.yaml")))
    conf_file = asr_dir / "config.yaml"
    if not conf_file.is_file():
        return System(asr_dir, "unknown (no config.yaml)", decode_configs=decode_configs)
    conf = _read_yaml(conf_file)
    known = dict(finetune_config=resolve(conf.get("config")), decode_configs=decode_configs,
                 finetune_drift=_drift(resolve(conf.get("config")), conf), finetune_threads=thread_use(asr_dir))
    model_file = resolve((conf.get("frontend_conf") or {}).get("model_file"))
    if conf.get("frontend") == "default":
        return System(asr_dir, "none (log-mel filterbank features, ESPnet's default frontend)", **known)
    if conf.get("frontend") != "aqc" or model_file is None:
        return System(asr_dir, f"frontend {conf.get('frontend')}", **known)
    ssl_dir = model_file.parent
    if ssl_dir.resolve() == asr_dir.resolve():  # the upstream was exported into the ASR experiment itself
        return System(asr_dir, "none (random initialisation)", **known)
    known["upstream_changed"] = upstream_change(asr_dir, model_file, base)
    ssl_conf_file = ssl_dir / "config.yaml"
    if not ssl_conf_file.is_file():
        return System(asr_dir, f"upstream {model_file.name}", **known)
    ssl_conf = _read_yaml(ssl_conf_file)
    return System(asr_dir, pretraining_method(ssl_conf), ssl_dir=ssl_dir,
                  pretrain_config=resolve(ssl_conf.get("config")),
                  pretrain_drift=_drift(resolve(ssl_conf.get("config")), ssl_conf),
                  upstream_choice=upstream_choice(model_file), pretrain_threads=thread_use(ssl_dir),
                  upstream_source=upstream_source(model_file), **known)


_FILE_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """:func:`aqc.stage_records.sha256_file`, cached per path, size and mtime: seed runs share one upstream."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]


def upstream_change(asr_dir: Path, model_file: Path, base: Path) -> str:
    """Empty when ``model_file`` is the upstream ``asr_dir`` was fine-tuned from (its stage-5 marker records the
    file's hash), or when there is no record to compare; else what happened to it, in words (the file named
    relative to ``base``, the directory training ran in)."""
    recorded = (_stage_record(asr_dir / ".done.5") or {}).get("upstream_model")
    if not recorded or recorded == "absent":
        return ""
    shown = Path(os.path.relpath(model_file.resolve(), base.resolve())).as_posix()
    if not model_file.is_file():
        return f"its upstream {shown} is gone"
    if _file_digest(model_file) != recorded:
        return f"its upstream {shown} was replaced after this fine-tuning (pre-trained again)"
    return ""


def upstream_choice(model_file: Path) -> str:
    """How ``aqc.bin.export_model`` chose the exported upstream (its ``<file>.json``), in words."""
    sidecar = Path(str(model_file) + ".json")
    if not sidecar.is_file():
        return ""
    record = json.loads(sidecar.read_text(encoding="utf-8"))
    where = f"update {record.get('num_updates')}"
    if record.get("select") == "probe":
        return (f"{where}, chosen by the probe: epoch {record.get('epoch')}, {record.get('metric')} "
                f"{100 * float(record.get('probe_error')):.1f} %; best probed: epoch {record.get('best_probed_epoch')}, "
                f"{100 * float(record.get('best_probe_error', 'nan')):.1f} +- "
                f"{100 * float(record.get('standard_error', 'nan')):.1f} %")
    return f"{where}, {record.get('select')}"


def upstream_source(model_file: Path) -> Optional[Tuple[str, int]]:
    """(resolved checkpoint path, update) an exported upstream was made from, from its ``<file>.json``."""
    sidecar = Path(str(model_file) + ".json")
    if not sidecar.is_file():
        return None
    record = json.loads(sidecar.read_text(encoding="utf-8"))
    if not record.get("checkpoint"):
        return None
    checkpoint = Path(record["checkpoint"])
    if not checkpoint.is_absolute():
        checkpoint = model_file.parent / checkpoint
    return str(checkpoint.resolve()), int(record.get("num_updates") or -1)


def shared_upstream_lines(systems: Sequence[System], base: Path) -> List[str]:
    """Systems (seed runs taken together) whose upstreams were exported from one pre-training checkpoint:
    e.g. ``--ssl_select latest`` and the probe's pick when the probe chose the last epoch. Their runs with
    equal seeds are one experiment twice, not two systems agreeing."""
    users: Dict[Tuple[str, int], set] = {}
    for s in systems:
        if s.upstream_source is not None:
            m = SEED_SUFFIX.match(s.asr_dir.name)
            users.setdefault(s.upstream_source, set()).add(m.group("system") if m else s.asr_dir.name)
    shared = {source: names for source, names in users.items() if len(names) > 1}
    if not shared:
        return []
    lines = ["**Shared upstreams.** These systems fine-tuned from the same pre-training weights (one checkpoint, "
             "exported under two selections), so their runs with equal seeds repeat one experiment: they are "
             "not independent evidence, and the tables count them for both systems.", ""]
    for (checkpoint, update), names in sorted(shared.items()):
        lines.append(f"- `{_link(Path(checkpoint), base)}` (update {update}): "
                     + ", ".join(f"`{n}`" for n in sorted(names)))
    return lines + [""]


def systems_table(systems: Sequence[System], base: Path) -> List[str]:
    def link(p: Optional[Path], drift: Sequence[str] = ()) -> str:
        if p is None:
            return "-"
        shown = ", ".join(drift[:6]) + (f", ... ({len(drift)} in all)" if len(drift) > 6 else "")
        return f"[{p.name}]({_link(p, base)})" + (f" (run with other values of {shown})" if drift else "")

    lines = ["| system | pre-training | pre-training config | fine-tuning config | decoding config "
             "| CPU threads: pre-training / fine-tuning |",
             "|---|---|---|---|---|---|"]
    for s in systems:
        ssl = f" (`{_link(s.ssl_dir, base)}`" + (f"; {s.upstream_choice}" if s.upstream_choice else "") + ")" \
            if s.ssl_dir is not None else ""
        decode = ", ".join(link(d) for d in s.decode_configs) or "-"
        stale = " **stale: upstream changed since fine-tuning**" if s.upstream_changed else ""
        lines.append(f"| {s.asr_dir.name} | {s.method}{ssl}{stale} | {link(s.pretrain_config, s.pretrain_drift)} | "
                     f"{link(s.finetune_config, s.finetune_drift)} | {decode} | "
                     f"{s.pretrain_threads or '-'} / {s.finetune_threads or '-'} |")
    return lines


SEED_SUFFIX = re.compile(r"^(?P<system>.+)_seed(?P<seed>[0-9]+)$")
PRETRAIN_SEED_SUFFIX = re.compile(r"^(?P<system>.+)_pseed(?P<seed>[0-9]+)$")


@dataclass
class SeedGroup:
    """One system's scores on one test set over the fine-tuning runs that differ only in their seed
    (``asr_<name>`` and ``asr_<name>_seed<N>``, as the recipes' ``--finetune_seeds`` writes them), or,
    pooled, over the runs of all its pre-trainings too (``asr_<name>_pseed<P>[_seed<N>]``)."""

    system: str                      # the first run's directory name
    test_set: str                    # the path below the run's directory, e.g. decode_decode/test
    runs: List[str]                  # directory names, first run first
    wer: List[float]
    cer: List[float]
    differing: List[str] = dataclasses.field(default_factory=list)  # inputs that differ between the runs
    stale: List[str] = dataclasses.field(default_factory=list)  # runs whose upstream changed after fine-tuning

    @property
    def averaged(self) -> bool:
        return not self.differing and not self.stale

    @staticmethod
    def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
        mean = sum(values) / len(values)
        if len(values) < 2:
            return mean, float("nan")
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    @property
    def wer_mean_std(self) -> Tuple[float, float]:
        return self._mean_std(self.wer)

    @property
    def cer_mean_std(self) -> Tuple[float, float]:
        return self._mean_std(self.cer)


def _system_and_set(scores_json: Path, exp: Path) -> Optional[Tuple[str, str]]:
    """(run directory, test-set path below it) of a ``<exp>/<run>/.../score/scores.json``."""
    try:
        parts = scores_json.resolve().relative_to(exp.resolve()).parts
    except ValueError:
        return None
    if len(parts) < 3:
        return None
    inner = parts[1:-2] if parts[-2] == "score" else parts[1:-1]
    return parts[0], "/".join(inner)


def seed_groups(test_sets: Sequence[Tuple[str, PathLike]], exp: Path,
                pool_pretraining: bool = False, rank_by: str = "wer") -> List[SeedGroup]:
    """Group the scored test sets by system and test set, fine-tuning seeds together (ordered by seed);
    ``pool_pretraining``: each pre-training seed's runs too (ordered by pre-training seed, then seed).
    Groups are ordered by test set, then by mean error rate (``rank_by``: wer or cer), lowest first."""
    if rank_by not in ("wer", "cer"):
        raise ValueError(f"rank_by: expected wer or cer, got {rank_by!r}")
    runs: Dict[Tuple[str, str], List[Tuple[Tuple[int, int], str, Dict]]] = {}
    for _, path in test_sets:
        where = _system_and_set(Path(path), exp)
        if where is None:
            continue
        run, test_set = where
        m = SEED_SUFFIX.match(run)
        system, seed = (m.group("system"), int(m.group("seed"))) if m else (run, -1)
        p = PRETRAIN_SEED_SUFFIX.match(system) if pool_pretraining else None
        system, pretrain_seed = (p.group("system"), int(p.group("seed"))) if p else (system, -1)
        order = (pretrain_seed, seed)
        with open(path, encoding="utf-8") as f:
            runs.setdefault((system, test_set), []).append((order, run, json.load(f)))
    groups = []
    for (system, test_set), found in runs.items():
        found.sort(key=lambda r: r[0])
        rate = [(r["wer"].get("rate"), r["cer"].get("rate")) for _, _, r in found]
        if any(w is None or c is None for w, c in rate):
            continue  # an empty reference has no rate; the per-run table shows it
        groups.append(SeedGroup(system, test_set, [run for _, run, _ in found],
                                [w for w, _ in rate], [c for _, c in rate]))
    def mean(g: SeedGroup) -> float:
        return (g.wer_mean_std if rank_by == "wer" else g.cer_mean_std)[0]

    return sorted(groups, key=lambda g: (g.test_set, mean(g)))


def _stage_record(path: Path) -> Optional[Dict[str, str]]:
    """A stage marker's record of inputs (``utils/stage_inputs.py``: ``name<TAB>value`` lines), or None."""
    if not path.is_file():
        return None
    return parse_record(path.read_text(encoding="utf-8"))


SEED_OPTION = re.compile(r"(^|\s)--seed\s+\S+")


def run_inputs(asr_dir: Path, ssl_dir: Optional[Path] = None, pooled: bool = False) -> Optional[Dict[str, str]]:
    """What a fine-tuning run was made from, as its stage-5 marker recorded it, without its seed (None: the
    run has no marker). ``pooled``: without its upstream's hash either, but with its pre-training's own
    record (stage 4's marker, without the pre-training seed), so pre-trainings are compared by their inputs."""
    record = _stage_record(asr_dir / ".done.5")
    if record is None:
        return None
    record.pop("seed", None)
    if pooled:
        record.pop("upstream_model", None)
        pretraining = _stage_record(ssl_dir / ".done.4") if ssl_dir is not None else None
        for name, value in (pretraining or {}).items():
            record[f"pre-training {name}"] = SEED_OPTION.sub("", value).strip() if name == "pretrain_args" else value
    return record


def differing_inputs(records: Sequence[Optional[Dict[str, str]]]) -> List[str]:
    """The inputs whose recorded values differ between runs meant to differ only in their seeds."""
    known = [r for r in records if r is not None]
    if not known:
        return []  # made outside the recipes' stage script: no records to compare
    if len(known) < len(records):
        return ["a run without a stage-5 record"]
    return sorted(k for k in set().union(*known) if len({r.get(k) for r in known}) > 1)


def check_seed_groups(groups: Sequence[SeedGroup], exp: Path, ssl_dirs: Dict[str, Path], pooled: bool,
                      per_pretraining: Sequence[SeedGroup] = (), stale: Sequence[str] = ()) -> None:
    """Set each group's ``differing``: a run left from before its inputs changed (a re-run that stopped
    before reaching it, say) must not be averaged with the others. ``pooled`` groups also take what differs
    within each of their pre-trainings (``per_pretraining``, checked already): the upstream may differ
    between pre-trainings, never between one pre-training's runs. Also set ``stale``: the group's runs among
    ``stale`` (their upstream changed after they were fine-tuned); such a group is not averaged either, even
    when all its runs agree."""
    for g in groups:
        differing = set(differing_inputs([run_inputs(exp / run, ssl_dirs.get(run), pooled) for run in g.runs]))
        for sub in per_pretraining:
            if sub.test_set == g.test_set and set(sub.runs) <= set(g.runs):
                differing.update(sub.differing)
        g.differing = sorted(differing)
        g.stale = [run for run in g.runs if run in stale]


def _pm(mean: float, std: float) -> str:
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


FINETUNE_SEEDS_INTRO = ("Each system's fine-tuning repeated with other seeds (`--finetune_seeds`; the upstream is "
                        "the same): mean ± sample standard deviation over the runs, in %.")
POOLED_SEEDS_INTRO = (
    "Each pre-trained system pooled over its pre-trainings (`--pretrain_seeds`: `_pseed<P>`) and their "
    "fine-tuning runs: mean ± sample standard deviation over all of them, in %. A system without "
    "pre-training has its fine-tuning runs only. The fine-tuning seeds of one pre-training (the table "
    "above) under-state the spread a user meets with another pre-training; the differences below are "
    "judged by these pooled spreads.")


def seed_lines(groups: Sequence[SeedGroup], methods: Dict[str, str], intro: str = FINETUNE_SEEDS_INTRO,
               differences: bool = True) -> List[str]:
    """Mean and standard deviation per system over its seeds, and (``differences``) which differences exceed
    the spread (for WER and for CER: a letter recogniser's WER can sit above 100 % while its CER still
    ranks systems)."""
    lines = [
        intro,
        "",
        "| system | pre-training | test set | runs | WER | CER | WER per run | CER per run |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for g in groups:
        mean_wer, mean_cer = (_pm(*g.wer_mean_std), _pm(*g.cer_mean_std)) if g.averaged else ("not averaged",) * 2
        lines.append(f"| {g.system} | {methods.get(g.system, '')} | {g.test_set} | {len(g.runs)} | "
                     f"{mean_wer} | {mean_cer} | {' '.join(f'{w:.2f}' for w in g.wer)} | "
                     f"{' '.join(f'{c:.2f}' for c in g.cer)} |")
    for g in groups:
        if g.differing:
            lines += ["", f"**{g.system} ({g.test_set}) not averaged**: its runs ({', '.join(g.runs)}) were made from "
                          f"different inputs ({'; '.join(g.differing)}), so some are left from before a change. "
                          "Run the command that made them again: it re-runs each run whose inputs changed."]
        if g.stale:
            lines += ["", f"**{g.system} ({g.test_set}) not averaged**: {', '.join(g.stale)} "
                          f"{'was' if len(g.stale) == 1 else 'were'} fine-tuned from an upstream that has changed since "
                          "(\"Stale runs\" above), so the scores describe an earlier pre-training."]
    if not differences:
        return lines
    for test_set in sorted({g.test_set for g in groups}):
        spread = [g for g in groups if g.test_set == test_set and len(g.runs) > 1 and g.averaged]
        if len(spread) < 2:
            continue
        for metric in ("WER", "CER"):
            lines += [
                "",
                f"Differences on {test_set} ({metric}, row minus column). A difference **exceeds the spread** "
                "(marked *) when it is larger than the two systems' standard deviations added; otherwise the "
                "seeds do not separate the two systems.",
                "",
                "| | " + " | ".join(g.system for g in spread) + " |",
                "|---|" + "---:|" * len(spread),
            ]
            for a in spread:
                cells = []
                for b in spread:
                    if a is b:
                        cells.append("")
                        continue
                    (ma, sa), (mb, sb) = (a.wer_mean_std, b.wer_mean_std) if metric == "WER" else \
                        (a.cer_mean_std, b.cer_mean_std)
                    cells.append(f"{ma - mb:+.2f}" + ("*" if abs(ma - mb) > sa + sb else ""))
                lines.append(f"| {a.system} | " + " | ".join(cells) + " |")
    return lines


def probe_lines(ssl_dir: Path, base: Path) -> List[str]:
    """The probe's curve of one pre-training run: one row per probed epoch."""
    from aqc.espnet.training_probe import read_scores

    rows = read_scores(ssl_dir / "probe" / "scores.jsonl")
    if not rows:
        return []
    exported: Dict[str, List[str]] = {}  # checkpoint file name -> the selections exported from it
    for sidecar in sorted(ssl_dir.glob("aqc_model.*.pt.json")):
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        exported.setdefault(Path(record.get("checkpoint", "")).name, []).append(str(record.get("select")))
    probing = sum(r["seconds"] for r in rows)
    wall = sum(r["seconds"] / max(r["share_of_time"], 1e-9) for r in rows)  # training start to the last probe
    lines = [f"`{_link(ssl_dir, base)}`: {rows[0]['task']} probe ({rows[0]['metric']}) on "
             f"{rows[0]['train_utterances']} train / {rows[0]['dev_utterances']} dev utterances; chance "
             f"{100 * rows[0]['chance']:.1f} %. Probing took {probing:.0f} s, {100 * probing / max(wall, 1e-9):.1f} % "
             "of the pre-training's wall time.", "",
             "| epoch | update | error (best layer) | best layer | error per layer | |", "|---|---|---|---|---|---|"]
    for r in rows:
        selections = exported.get(f"{r['epoch']}epoch.pth")
        mark = f"exported ({', '.join(selections)})" if selections else ""
        layers = " ".join(f"{100 * e:.1f}" for e in r["layer_errors"])
        lines.append(f"| {r['epoch']} | {r['num_updates']} | {100 * r['best_error']:.1f} % | {r['best_layer']} | "
                     f"{layers} | {mark} |")
    plot = ssl_dir / "images" / "probe_err.png"
    if plot.is_file():
        lines += ["", f"![probe_err]({_link(plot, base)})"]
    return lines + [""]


def environment_lines(repo_dir: Optional[PathLike] = None, recipe_dir: Optional[PathLike] = None) -> List[str]:
    """Date, platform, package versions (from metadata: importing torch here would be slow) and the commit
    of the ``aqc`` package's checkout (``repo_dir``: where this module is). A recipe run from one checkout
    with an environment installed from another ran that one's scripts and this one's model code: when
    ``recipe_dir``'s checkout is at another commit, both are named."""
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
    recipe_commit = git_commit(recipe_dir) if recipe_dir is not None else None
    if commit and recipe_commit not in (None, commit):
        lines.append(f"- git commit: `{commit}` (the installed aqc package's checkout); the recipe's checkout: "
                     f"`{recipe_commit}`")
    elif commit:
        lines.append(f"- git commit: `{commit}`")
    elif recipe_commit:
        lines.append(f"- git commit: `{recipe_commit}` (the recipe's checkout; the aqc package is not in one)")
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
    systems: Optional[Sequence[PathLike]] = None,
    rank_by: str = "wer",
) -> str:
    """Write RESULTS.md to ``out`` and return its text.

    ``test_sets``, ``images`` and ``tensorboard_dirs`` default to what is found under ``exp_dir``
    (``**/scores.json``, ``*/images/*.png``, ``*/tensorboard``); ``stage_times`` to
    ``<exp_dir>/stage_times.tsv`` when that exists; ``systems`` (ASR experiment directories described in
    a table) to the ``<exp_dir>/asr_*`` directories that hold one of the scored test sets. ``rank_by``
    (wer or cer) orders the seed tables.
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
    if systems is None:
        scored = [Path(p).resolve() for _, p in test_sets]
        systems = [d for d in sorted(exp.glob("asr_*")) if d.is_dir()
                   and any(d.resolve() in p.parents for p in scored)]

    lines = [
        "<!-- Generated by `python -m aqc.bin.make_results`; edit the notes, not the tables. -->",
        f"# {title or 'RESULTS'}",
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    if environment:
        lines += ["## Environment", "", *environment_lines(recipe_dir=base), ""]
    lines += [f"## `{_link(exp, base)}`", ""]
    if configs:
        lines += ["### Configs", ""]
        lines += [f"- [{Path(c).name}]({_link(c, base)})" for c in configs]
        lines.append("")
    described = [describe_system(d) for d in systems or []]
    stale = [d for d in described if d.upstream_changed]
    if stale:
        lines += ["**Stale runs.** These fine-tuned models started from an upstream that is not the one there now, "
                  "so their scores below describe an earlier pre-training, not the current one (they are "
                  "not averaged with anything):", ""]
        lines += [f"- `{_link(d.asr_dir, base)}`: {d.upstream_changed}" for d in stale]
        lines += ["", "Run their fine-tuning again (`--stage 5` with the options that made them), or move them "
                  f"to `{_link(exp / SUPERSEDED, base)}/`.", ""]
    if described:
        lines += ["### Systems", "", *systems_table(described, base), ""]
        lines += shared_upstream_lines(described, base)
        if any(d.finetune_drift or d.pretrain_drift for d in described):
            lines += ["A config marked \"run with other values\" holds, for the keys named, values other than "
                      "those the run used (command-line options such as `--finetune_args`, or the file edited "
                      "since); the run's own `config.yaml` in its experiment directory has them all.", ""]
    lines += ["### WER / CER", ""]
    if test_sets:
        lines += scores_table(test_sets, base)
        lines += [
            "",
            "WER over words, CER over characters without spaces (see `aqc/scoring.py`). A recipe scores every "
            "utterance of each set (a missing hypothesis stops its stage 6); `missing hyps` counts those scored "
            "as all deletions when `aqc.bin.score` runs without `--require_all`.",
            "",
            *test_set_lines(test_sets, base),
        ]
    else:
        lines.append(f"No scores.json found under `{_link(exp, base)}` (run the scoring stage).")
    lines.append("")
    groups = seed_groups(test_sets or [], exp, rank_by=rank_by)
    pooled = seed_groups(test_sets or [], exp, pool_pretraining=True, rank_by=rank_by)
    ssl_dirs = {d.asr_dir.name: d.ssl_dir for d in described if d.ssl_dir is not None}
    stale_runs = [d.asr_dir.name for d in stale]
    check_seed_groups(groups, exp, ssl_dirs, pooled=False, stale=stale_runs)
    check_seed_groups(pooled, exp, ssl_dirs, pooled=True, per_pretraining=groups, stale=stale_runs)
    several_pretrainings = len(pooled) < len(groups)
    if any(len(g.runs) > 1 for g in pooled):  # several fine-tunings, or several pre-trainings of one each
        methods = {d.asr_dir.name: d.method for d in described}
        lines += ["### Mean over seeds", "", *seed_lines(groups, methods, differences=not several_pretrainings), ""]
        if several_pretrainings:
            lines += ["### Mean over pre-training and fine-tuning seeds", "",
                      *seed_lines(pooled, methods, intro=POOLED_SEEDS_INTRO), ""]
    probes = [line for d in sorted(exp.glob("ssl_*")) if d.is_dir() for line in probe_lines(d, base)]
    if probes:
        lines += ["### Pre-training probe", "",
                  "A probe fitted on the frozen encoder after each epoch (`aqc.espnet.training_probe`); errors in %.",
                  "", *probes]
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

