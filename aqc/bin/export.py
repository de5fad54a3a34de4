"""Export an aqc model to Hugging Face transformers or to s3prl.

    python -m aqc.bin.export --to hf --model_file exp/ssl_tiny/valid.loss.best.pth --output_dir exp/hf_tiny
    python -m aqc.bin.export --to s3prl --model_file aqc_model.pt --output exp/s3prl/data2vec_aqc.pt

``--model_file``: an aqc model file, an ESPnet aqc SSL checkpoint (``config.yaml`` beside it), or
anything else :func:`aqc.api.load_model` reads.

hf: a folder ``transformers.Data2VecAudioModel.from_pretrained(dir)`` loads (config.json,
model.safetensors, preprocessor_config.json), inference encoder only. Its ``hidden_states`` equal aqc's
features; on padded batches transformers zeroes padding only before the first positional conv block
(aqc's ``pos_conv_mask_padding=False``), so there a shorter utterance's features differ slightly from
its unpadded ones. ``extractor_mode=group_norm`` models cannot be exported to hf.

s3prl: a checkpoint for s3prl's ``data2vec_local`` upstream (ESPnet ``frontend: s3prl`` with
``frontend_conf: {upstream: data2vec_local, path_or_url: <file>}``); ``--output_dir`` writes
``<dir>/s3prl_data2vec.pt``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

S3PRL_FILE_NAME = "s3prl_data2vec.pt"


def main(argv: Optional[List[str]] = None) -> int:
    """A user error (unreadable or refused model file, an architecture hf cannot hold) prints ``ERROR: ...``
    and exits with status 2."""
    from aqc.cli import run_cli

    return run_cli(_main, argv)


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--to", required=True, choices=("hf", "s3prl"))
    parser.add_argument("--model_file", required=True, type=Path)
    parser.add_argument("--output_dir", type=Path, help="hf: the folder to write; s3prl: folder for " + S3PRL_FILE_NAME)
    parser.add_argument("--output", type=Path, help="s3prl: the checkpoint file to write")
    args = parser.parse_args(argv)
    if args.to == "hf" and args.output_dir is None:
        parser.error("--to hf needs --output_dir")
    if args.to == "s3prl" and (args.output is None) == (args.output_dir is None):
        parser.error("--to s3prl needs exactly one of --output or --output_dir")

    from aqc.api import load_model
    from aqc.interop import export_hf, export_s3prl

    model = load_model(args.model_file)
    if args.to == "hf":
        out = export_hf(model, args.output_dir)
        print(f"wrote {out} (transformers.Data2VecAudioModel.from_pretrained('{out}'))")
        if model.config.pos_conv_mask_padding:
            print("note: on padded batches transformers behaves as aqc's pos_conv_mask_padding=False")
    else:
        out = export_s3prl(model, args.output or args.output_dir / S3PRL_FILE_NAME)
        print(f"wrote {out}\nESPnet: frontend: s3prl, frontend_conf: {{frontend_conf: {{upstream: data2vec_local, "
              f"path_or_url: {out}}}, multilayer_feature: true}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
