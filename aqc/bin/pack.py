#!/usr/bin/env python3
"""Pack a trained model into one archive, and export a pre-trained one for the Hugging Face hub.

    python -m aqc.bin.pack --asr_exp exp/asr_X --model_file exp/asr_X/valid.wer_ctc.best.pth \\
        --results RESULTS.md --out exp/packed/asr_X.zip
    python -m aqc.bin.pack --ssl_exp exp/ssl_Y --results RESULTS.md --out exp/packed/ssl_Y.zip \\
        --hf_dir exp/packed/hf_ssl_Y --license cc-by-4.0 --language en --dataset librispeech_asr

The archive (:mod:`aqc.packing`) holds the model, its config, token list / BPE model, RESULTS.md and the
training curves; ``aqc.bin.asr_inference --model_archive`` and ``aqc.api.load_model`` read it directly.
``--hf_dir`` also writes a Hugging Face folder of the pre-trained encoder with a model card (README.md with
the hub's metadata block; :mod:`aqc.interop.model_card`). Nothing is uploaded: the upload command is printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    from aqc.cli import run_cli

    return run_cli(_main, argv)


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--asr_exp", type=Path, help="a fine-tuning experiment directory")
    what.add_argument("--ssl_exp", type=Path, help="a pre-training experiment directory (with aqc_model.pt)")
    parser.add_argument("--model_file", type=Path, help="the checkpoint to pack (asr: required)")
    parser.add_argument("--results", type=Path, default=None, help="the recipe's RESULTS.md")
    parser.add_argument("--out", type=Path, required=True, help="the archive to write (.zip)")
    parser.add_argument("--hf_dir", type=Path, default=None, help="ssl: also write a Hugging Face folder here")
    parser.add_argument("--name", default=None, help="model name on the hub (default: the experiment's name)")
    parser.add_argument("--license", default="cc-by-4.0")
    parser.add_argument("--language", action="append", default=None, help="ISO code(s), e.g. en (repeatable)")
    parser.add_argument("--dataset", action="append", default=None, help="hub dataset id(s) (repeatable)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".zip":
        parser.error("--out must end in .zip")

    from aqc.packing import pack

    if args.asr_exp is not None:
        if args.model_file is None:
            parser.error("--asr_exp needs --model_file (the checkpoint to pack)")
        if args.hf_dir is not None:
            parser.error("--hf_dir exports a pre-trained encoder: use it with --ssl_exp")
        out = pack(args.out, "asr", args.model_file, args.asr_exp / "config.yaml", args.results,
                   args.asr_exp / "images")
        print(f"wrote {out}\ndecode with: python -m aqc.bin.asr_inference --model_archive {out} ...")
        return 0
    model_file = args.model_file or args.ssl_exp / "aqc_model.pt"
    out = pack(args.out, "ssl", model_file, args.ssl_exp / "config.yaml", args.results, args.ssl_exp / "images")
    print(f"wrote {out}\nload with: aqc.api.load_model('{out}')")
    if args.hf_dir is not None:
        from aqc.api import load_model
        from aqc.interop import export_hf
        from aqc.interop.model_card import results_for, write_model_card

        model = load_model(model_file)
        folder = export_hf(model, args.hf_dir)
        name = args.name or args.ssl_exp.name
        results = results_for(args.results, f"{args.ssl_exp.parent.name}/{args.ssl_exp.name}") \
            if args.results is not None and args.results.is_file() else None
        card = write_model_card(folder, model, name, args.license, args.language or ["en"], args.dataset or [],
                                results)
        print(f"wrote {folder} with {card.name}\nupload (needs a network and a hub token): "
              f"huggingface-cli upload <user>/{name} {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
