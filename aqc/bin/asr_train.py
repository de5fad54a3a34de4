#!/usr/bin/env python3
"""ASR fine-tuning of a pre-trained data2vec-aqc model: ESPnet's ``asr_train`` with ``frontend: aqc``.

    python -m aqc.bin.asr_train --config egs/TEMPLATE/conf/finetune_10h.yaml \\
        --frontend_conf model_file=exp/ssl/valid.loss.best.pth \\
        --token_type char --token_list data/token_list/char/tokens.txt \\
        --train_data_path_and_name_and_type data/train/wav.scp,speech,sound \\
        --train_data_path_and_name_and_type data/train/text,text,text \\
        --train_shape_file exp/asr_stats/train/speech_shape \\
        --train_shape_file exp/asr_stats/train/text_shape.char \\
        --valid_data_path_and_name_and_type ... --valid_shape_file ... --output_dir exp/asr_10h

Every option of ``espnet2.bin.asr_train`` works (``--print_config``, ``--resume``, ``--ngpu`` ...), run
through :class:`aqc.espnet.asr_task.AQCASRTask`: ``--ngpu N`` starts one process per GPU (DDP), the
global batch can be given as ``--samples_per_update`` (:mod:`aqc.espnet.global_batch`), and validation
reports ``wer_ctc``. Importing :mod:`aqc.espnet.frontend` registers ``frontend: aqc`` and makes the experiment's config.yaml
carry the upstream's configuration (``frontend_conf.upstream_conf``), so the experiment directory
decodes without the pre-training checkpoint. Before ESPnet starts, :func:`aqc.espnet.preflight.preflight_asr`
checks the GPUs, the types of the ``*_conf`` values, the token list, the data lists (the text holds
every utterance of the audio list) and every audio file's header. A user error (those, a missing
upstream model file, a token list that does not fit a checkpoint, an unknown ``frontend_conf`` key)
prints ``ERROR: ...`` and exits with status 2; ``AQC_DEBUG=1`` shows the traceback.
"""
from __future__ import annotations

from typing import List, Optional



def get_parser():
    from aqc.espnet.asr_task import AQCASRTask

    return AQCASRTask.get_parser()


def main(cmd: Optional[List[str]] = None) -> None:
    from aqc.cli import run_cli

    run_cli(_main, cmd)


def _main(cmd: Optional[List[str]] = None) -> None:
    from aqc.espnet.asr_task import AQCASRTask
    from aqc.espnet.preflight import preflight_asr

    args = get_parser().parse_args(cmd)
    if not args.print_config:
        preflight_asr(AQCASRTask, args)
    AQCASRTask.main(args=args)


if __name__ == "__main__":
    main()
