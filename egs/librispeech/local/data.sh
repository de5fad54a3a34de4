#!/usr/bin/env bash
# Stage 1 of egs/librispeech: data dirs for pre-training, the fine-tuning subset and dev/test sets.
#   --librispeech_root DIR   LibriSpeech (train-clean-100, ..., dev-clean, test-other)
#   --librilight_root DIR    Libri-light's librispeech_finetuning (1h/, 9h/); needed for 10min/1h/10h
#   --pretrain_data 960h|460h|360h|100h, --finetune_subset 10min|1h|10h|100h
#   --eval_splits            comma-separated LibriSpeech splits to prepare for validation and test
set -euo pipefail
librispeech_root=
librilight_root=
pretrain_data=960h
finetune_subset=10h
eval_splits=dev-clean,dev-other,test-clean,test-other
root=$(cd "$(dirname "$0")/../../.." && pwd)
. "${root}/utils/log.sh"
. "${root}/utils/parse_options.sh"
if [ -z "${librispeech_root}" ]; then
  log "ERROR: set --librispeech_root to your LibriSpeech folder (download from https://www.openslr.org/12)"
  exit 1
fi
python local/prepare_librispeech.py --librispeech_root "${librispeech_root}" \
  ${librilight_root:+--librilight_root "${librilight_root}"} --pretrain_data "${pretrain_data}" \
  --finetune_subset "${finetune_subset}" --eval_splits "${eval_splits}"
