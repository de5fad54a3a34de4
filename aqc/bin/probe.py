"""Score any model aqc reads, layer by layer, with a downstream probe (:mod:`aqc.probe`).

    python -m aqc.bin.probe --model_file exp/ssl_pretrain_aqc/aqc_model.pt \\
        --train_data dump/train_ft --dev_data dump/dev --output exp/probe_aqc.json
    python -m aqc.bin.probe --model_file facebook-data2vec-audio-base/ --train_data ... --dev_data ...

``--model_file``: an aqc model file, an ESPnet aqc checkpoint (``<N>epoch.pth`` with ``config.yaml``
beside it), a Hugging Face Data2VecAudio folder, a fairseq data2vec / data2vec-aqc checkpoint or an
``aqc.bin.pack`` archive; several may be given, and each gets a table. The data dirs are Kaldi-style
(``wav.scp`` with audio files, ``text``). Prints one row per layer and writes the results as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from aqc import cpu_threads
from aqc.probe import TASKS, Probe, ProbeConfig, ProbeResult


def table(name: str, result: ProbeResult) -> str:
    lines = [f"{name}: {result.task} probe, {result.train_utterances} train / {result.dev_utterances} dev "
             f"utterances, {result.seconds:.1f} s (model at update {result.num_updates})",
             f"  layer  {result.metric}"]
    for layer, error in enumerate(result.layer_errors):
        mark = "  <- best" if layer == result.best_layer else ""
        lines.append(f"  {layer:>5}  {100 * error:6.2f} %{mark}")
    lines.append(f"  chance {100 * result.chance:6.2f} %")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """A user error (missing file, unreadable model or audio) prints ``ERROR: ...`` and exits with 2."""
    from aqc.cli import run_cli

    return run_cli(_main, argv)


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_file", nargs="+", required=True, help="model(s) to score")
    parser.add_argument("--train_data", type=Path, required=True, help="labelled data dir the probe fits on")
    parser.add_argument("--dev_data", type=Path, required=True, help="labelled data dir the probe scores")
    parser.add_argument("--output", type=Path, help="JSON file of the results (default: print only)")
    parser.add_argument("--task", choices=TASKS, default="auto")
    parser.add_argument("--max_utterances", type=int, default=ProbeConfig.max_utterances)
    parser.add_argument("--max_seconds", type=float, default=ProbeConfig.max_seconds)
    parser.add_argument("--ctc_steps", type=int, default=ProbeConfig.ctc_steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    cpu_threads.add_argument(parser)
    args = parser.parse_args(argv)
    cpu_threads.apply(args.num_threads)

    from aqc.api import load_model

    config = ProbeConfig.from_dict({"task": args.task, "max_utterances": args.max_utterances,
                                    "max_seconds": args.max_seconds, "ctc_steps": args.ctc_steps, "seed": args.seed})
    for path in args.model_file:  # fail on a missing model before reading any audio
        if not Path(path).exists():
            raise FileNotFoundError(f"--model_file {path}: no such file or folder")
    probe = Probe.from_dirs(args.train_data, args.dev_data, config)
    report = {"train_data": str(args.train_data), "dev_data": str(args.dev_data), "task": probe.task,
              "metric": probe.metric, "models": {}}
    for path in args.model_file:
        result = probe(load_model(path, map_location=args.device))
        print(table(path, result))
        report["models"][path] = result.to_dict()
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"probe: wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
