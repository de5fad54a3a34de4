"""Import a fairseq data2vec / data2vec-aqc checkpoint (or an s3prl data2vec one) as an aqc model file.

    python -m aqc.bin.import_fairseq --checkpoint audio_base_ls.pt --output exp/imported/aqc_model.pt

Needs neither fairseq nor omegaconf: the checkpoint is read with a restricted unpickler that runs no
code from the file. The EMA teacher (``_ema``) becomes aqc's teacher (without it the teacher starts as
a copy of the student). A data2vec checkpoint has no quantizer: the model gets ``use_quantizer=False``,
or a freshly initialised quantizer with ``--add_quantizer true`` (to continue pre-training the
data2vec-aqc way). Prints what was loaded, dropped (and why) and initialised.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def main(argv: Optional[List[str]] = None) -> int:
    """A user error (unreadable or unsupported checkpoint) prints ``ERROR: ...`` and exits with status 2."""
    from aqc.cli import run_cli

    return run_cli(_main, argv)


def _main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="fairseq (or s3prl) checkpoint")
    parser.add_argument("--output", required=True, type=Path, help="aqc model file to write")
    parser.add_argument("--add_quantizer", type=_bool, default=False,
                        help="give a data2vec checkpoint a freshly initialised quantizer (default false)")
    parser.add_argument("--pos_conv_mask_padding", type=_bool, default=True,
                        help="aqc's padded-batch behaviour (fairseq behaves as false; unpadded input is the same)")
    args = parser.parse_args(argv)

    from aqc.interop import import_fairseq_checkpoint
    from aqc.models.io import save_model_file

    model, report = import_fairseq_checkpoint(args.checkpoint, args.add_quantizer, args.pos_conv_mask_padding)
    save_model_file(model, args.output)
    print("\n".join(report.lines()))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
