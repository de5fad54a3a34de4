#!/usr/bin/env python3
"""data2vec-aqc pre-training with ESPnet's trainer: ``AQCSSLTask`` (ESPnet's SSL task, ``model: aqc``).

    python -m aqc.bin.ssl_train --config egs/TEMPLATE/conf/pretrain_tiny.yaml \\
        --train_data_path_and_name_and_type data/train/wav.scp,speech,sound \\
        --train_shape_file data/train/speech_shape \\
        --valid_data_path_and_name_and_type data/dev/wav.scp,speech,sound \\
        --valid_shape_file data/dev/speech_shape \\
        --output_dir exp/ssl_tiny --ngpu 0 --num_workers 1

Shape files are ``<utt> <number of samples>`` (``utils/get_utt2num_samples.py``, or ESPnet's
``--collect_stats true`` run, which writes ``<output_dir>/{train,valid}/speech_shape``). Every option of
``espnet2.bin.ssl_train``'s trainer works (``--print_config``, ``--resume true``, ``--accum_grad``,
``--use_amp``, ``--max_epoch``/``--num_iters_per_epoch``, ``--seed``, ``--ngpu N`` with ESPnet's launcher).
CPU multi-process (gloo; the backend switches to gloo by itself with ``--ngpu 0``)::

    torchrun --standalone --nproc_per_node 2 -m aqc.bin.ssl_train --ngpu 0 --config ... --output_dir ...

See :mod:`aqc.espnet.ssl` for what the task changes in ESPnet's SSL task. A user error (bad option, bad
audio, unreadable checkpoint, collapse, too many non-finite losses) prints ``ERROR: ...`` and exits with
status 2; ``AQC_DEBUG=1`` shows the traceback (:func:`aqc.cli.run_cli`).
"""
from __future__ import annotations

from typing import List, Optional


def get_parser():
    from aqc.espnet.ssl import AQCSSLTask

    return AQCSSLTask.get_parser()


def main(cmd: Optional[List[str]] = None) -> None:
    from aqc.cli import run_cli
    from aqc.espnet.ssl import AQCSSLTask  # importing it registers model: aqc into ESPnet's SSL task

    run_cli(AQCSSLTask.main, cmd=cmd)


if __name__ == "__main__":
    main()
