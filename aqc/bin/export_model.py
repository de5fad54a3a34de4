"""Write a self-contained aqc model file from a pre-training experiment, or a randomly initialised one.

    python -m aqc.bin.export_model --ssl_exp exp/ssl_pretrain_tiny --output exp/ssl_pretrain_tiny/aqc_model.pt
    python -m aqc.bin.export_model --random_init true --config conf/pretrain_aqc.yaml --output exp/scratch/aqc_model.pt
    python -m aqc.bin.export_model --random_init true --model_conf preset=tiny --output exp/scratch/aqc_model.pt

From an experiment it takes the last model, ``latest.pth``, else the newest ``<N>epoch.pth``
(``--checkpoint`` picks another; :func:`find_checkpoint` says why not the best valid loss). The random
model is the "no pre-training" baseline: the same encoder, untrained; its architecture is the
``model_conf`` of ``--config`` (a pre-training YAML), with ``--model_conf key=value`` options on top.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import List, Optional

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
        checkpoint = args.checkpoint or find_checkpoint(args.ssl_exp)
        model = load_model_file(checkpoint)
        source = str(checkpoint)
    save_model_file(model, args.output)
    print(f"export_model: {source} (update {model.num_updates}) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
