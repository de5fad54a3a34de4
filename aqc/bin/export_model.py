"""Write a self-contained aqc model file from a pre-training experiment, or a randomly initialised one.

    python -m aqc.bin.export_model --ssl_exp exp/ssl_pretrain_tiny --output exp/ssl_pretrain_tiny/aqc_model.pt
    python -m aqc.bin.export_model --ssl_exp exp/ssl_pretrain_tiny --select probe --output ...
    python -m aqc.bin.export_model --random_init true --config conf/pretrain_aqc.yaml --output exp/scratch/aqc_model.pt
    python -m aqc.bin.export_model --random_init true --model_conf preset=tiny --output exp/scratch/aqc_model.pt

From an experiment, ``--select`` chooses the checkpoint:

* ``latest`` (default): the last model, ``latest.pth``, else the newest ``<N>epoch.pth``;
* ``probe``: by the downstream probe's scores (``probe/scores.jsonl``, written when the run had
  ``--probe_train_data``/``--probe_dev_data``: :mod:`aqc.espnet.training_probe`): the last epoch unless it
  scored worse than the best-probed epoch by more than one standard error, then that one
  (:func:`probe_checkpoint` says why not simply the best);
* ``valid_loss``: ``valid.loss.best.pth`` (:func:`find_checkpoint` says why it is a poor choice for data2vec).

``--checkpoint`` names a file instead. Beside the output, ``<output>.json`` records what was chosen and why
(a recipe reads it to know whether the export matches its options). The random
model is the "no pre-training" baseline: the same encoder, untrained; its architecture is the
``model_conf`` of ``--config`` (a pre-training YAML), with ``--model_conf key=value`` options on top.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from aqc.models import Data2VecAQC
from aqc.models.io import config_from_model_conf, load_model_file, save_model_file


def find_checkpoint(exp_dir: Path) -> Path:
    """The pre-training run's last model: ``latest.pth``, else the newest ``<N>epoch.pth``.

    Not ``valid.loss.best.pth``: data2vec's regression targets come from the EMA teacher, which keeps
    improving, so the valid loss of a later model is measured against other (harder) targets and rises
    while the representation gets better (egs/fsdd: valid loss lowest at update 1,234 of 6,000; digit
    error rate after fine-tuning 67.6 % from that model, 44.7 % from the last).
    """
    if (exp_dir / "latest.pth").exists():
        return (exp_dir / "latest.pth").resolve()
    epochs = sorted(exp_dir.glob("*epoch.pth"), key=lambda p: int(re.match(r"(\d+)", p.name).group(1)))
    if epochs:
        return epochs[-1]
    raise FileNotFoundError(f"no checkpoint (latest.pth, <N>epoch.pth) in {exp_dir}; did pre-training "
                            "(stage 4) finish? (--checkpoint picks a file by name)")


SELECTIONS = ("latest", "probe", "valid_loss")


def probe_checkpoint(exp_dir: Path) -> Tuple[Path, Dict]:
    """The last epoch, unless the probe scored it worse than its best epoch by more than one standard error;
    then the best (the earliest among equals).

    Why not simply the best: the probe's score is noisy (200 dev digits: +-2.7 points at 18 % error), so
    the minimum over many epochs is often a lucky dip. In egs/fsdd the best-probed epoch (17 of 24, 16.5 %
    against 18.5 % for the last) fine-tuned to 42.5 % test digit error, the last epoch to 34.3 %, the
    lowest valid loss (epoch 4) to 62.3 % (one fine-tuning each). The probe guards against a run that got
    worse (a collapse, a learning rate too high), where the last epoch scores clearly below the best.
    """
    from aqc.espnet.training_probe import read_scores
    from aqc.probe import standard_error

    scores = read_scores(exp_dir / "probe" / "scores.jsonl")
    if not scores:
        raise FileNotFoundError(
            f"--select probe: no probe scores in {exp_dir}/probe/scores.jsonl. The run needs --probe_train_data and "
            "--probe_dev_data (a recipe passes its fine-tuning train and dev sets unless --probe false); use "
            "--select latest for a run without a probe")
    best = min(scores, key=lambda r: (r["best_error"], r["epoch"]))
    margin = standard_error(best["best_error"], best.get("dev_units") or best["dev_utterances"])
    last = max(scores, key=lambda r: r["epoch"])
    latest = find_checkpoint(exp_dir)
    last_is_latest = latest.name == f"{last['epoch']}epoch.pth"
    if last_is_latest and last["best_error"] <= best["best_error"] + margin:
        chosen, why = last, (f"the last epoch, within one standard error ({margin:.4f}) of the best probed epoch "
                             f"{best['epoch']} ({best['best_error']:.4f})")
    else:
        chosen = best
        why = (f"the best probed epoch; the last one probed (epoch {last['epoch']}, {last['best_error']:.4f}) is "
               f"worse by more than one standard error ({margin:.4f})" if last_is_latest else
               f"the best probed epoch; the latest checkpoint ({latest.name}) was not probed")
    path = exp_dir / f"{chosen['epoch']}epoch.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"--select probe: epoch {chosen['epoch']} scored best ({chosen['metric']} {chosen['best_error']:.4f}) but "
            f"{path} is gone. ESPnet keeps only the n-best epochs of best_model_criterion: list [valid, probe_err, "
            "min] there (aqc.bin.ssl_train adds it when the probe is on) and rerun, or use --select latest")
    return path, {"epoch": chosen["epoch"], "num_updates": chosen["num_updates"], "probe_error": chosen["best_error"],
                  "probe_layer": chosen["best_layer"], "metric": chosen["metric"], "why": why,
                  "best_probed_epoch": best["epoch"], "best_probe_error": best["best_error"],
                  "standard_error": margin, "probed_epochs": [r["epoch"] for r in scores]}


def choose_checkpoint(exp_dir: Path, select: str) -> Tuple[Path, Dict]:
    """(checkpoint, what to record about the choice) for ``--select``."""
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"--ssl_exp {exp_dir}: no such directory; did pre-training (stage 4) run?")
    if select == "probe":
        return probe_checkpoint(exp_dir)
    if select == "valid_loss":
        path = exp_dir / "valid.loss.best.pth"
        if not path.exists():
            raise FileNotFoundError(f"--select valid_loss: {path} not found (best_model_criterion must list "
                                    "[valid, loss, min])")
        return path.resolve(), {}
    return find_checkpoint(exp_dir), {}


def parse_model_conf(items: List[str]) -> dict:
    import yaml

    conf = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--model_conf expects key=value, got {item!r}")
        conf[key] = yaml.safe_load(value)
    return conf


def main(argv: Optional[List[str]] = None) -> int:
    """A user error (no checkpoint, unreadable file, bad model_conf) prints ``ERROR: ...`` and exits with 2."""
    from aqc.cli import run_cli

    return run_cli(_main, argv)


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ssl_exp", type=Path, help="pre-training experiment directory")
    parser.add_argument("--checkpoint", type=Path, help="a specific checkpoint inside --ssl_exp")
    parser.add_argument("--select", choices=SELECTIONS, default="latest",
                        help="which checkpoint of --ssl_exp: the last, the best-probed epoch, the lowest valid loss")
    parser.add_argument("--random_init", type=lambda s: s.lower() == "true", default=False)
    parser.add_argument("--config", type=Path, help="pre-training YAML whose model_conf to use (with --random_init)")
    parser.add_argument("--model_conf", action="append", default=[], help="key=value (with --random_init)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.random_init:
        torch.manual_seed(args.seed)
        model_conf = {}
        if args.config is not None:
            import yaml

            if not args.config.is_file():
                raise FileNotFoundError(f"export_model: --config {args.config} not found")
            with open(args.config, encoding="utf-8") as f:
                model_conf = dict((yaml.safe_load(f) or {}).get("model_conf") or {})
        model_conf.update(parse_model_conf(args.model_conf))
        model = Data2VecAQC(config_from_model_conf(model_conf))
        source = "random initialisation" + (f" ({args.config})" if args.config else "")
    else:
        if args.ssl_exp is None:
            parser.error("give --ssl_exp (or --random_init true)")
        if args.checkpoint is not None:
            checkpoint, choice, select = args.checkpoint, {}, "checkpoint"
        else:
            checkpoint, choice = choose_checkpoint(args.ssl_exp, args.select)
            select = args.select
        model = load_model_file(checkpoint)
        source = str(checkpoint)
        if choice:
            source += f" (epoch {choice['epoch']}, {choice['metric']} {choice['probe_error']:.4f}: {choice['why']})"
        record = {"select": select, "checkpoint": str(Path(checkpoint).resolve()), "num_updates": model.num_updates,
                  **choice}
    save_model_file(model, args.output)
    if not args.random_init:
        sidecar = Path(str(args.output) + ".json")
        sidecar.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"export_model: {source} (update {model.num_updates}) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
