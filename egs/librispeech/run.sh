#!/usr/bin/env bash
# LibriSpeech: data2vec-aqc Base pre-training on 960 h (or 360 h), CTC fine-tuning on Libri-light
# 10 min / 1 h / 10 h or LibriSpeech 100 h, Viterbi decoding on dev/test clean/other.
#   ./run.sh --librispeech_root DIR [--librilight_root DIR] [--musan_root DIR] [--pretrain_data 960h|360h]
#            [--finetune_subset 10min|1h|10h|100h] [--ngpu N] [--stage N --stop_stage M] [template options]
# The paper's batch is 16 GPUs x 3.8M samples: on N GPUs add --pretrain_args "--accum_grad $((16 / N))".
set -euo pipefail
librispeech_root=
librilight_root=
musan_root=
pretrain_data=960h
finetune_subset=10h
pretrain_config=conf/pretrain_base.yaml
finetune_config=
decode_config=conf/decode.yaml
. ./path.sh
. ./cmd.sh
opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --librispeech_root|--librispeech-root) librispeech_root=$2; shift 2 ;;
    --librilight_root|--librilight-root) librilight_root=$2; shift 2 ;;
    --musan_root|--musan-root) musan_root=$2; shift 2 ;;
    --pretrain_data|--pretrain-data) pretrain_data=$2; shift 2 ;;
    --finetune_subset|--finetune-subset) finetune_subset=$2; shift 2 ;;
    --pretrain_config|--pretrain-config) pretrain_config=$2; shift 2 ;;
    --finetune_config|--finetune-config) finetune_config=$2; shift 2 ;;
    --decode_config|--decode-config) decode_config=$2; shift 2 ;;
    *) opts+=("$1"); shift ;;
  esac
done
[ -n "${finetune_config}" ] || finetune_config=conf/finetune_${finetune_subset}.yaml

../TEMPLATE/aqc.sh --pretrain_set "train_${pretrain_data}" --finetune_set "train_${finetune_subset}" \
  --valid_set dev_other --test_sets "dev_clean dev_other test_clean test_other" \
  --local_data_opts "--librispeech_root ${librispeech_root} ${librilight_root:+--librilight_root ${librilight_root}} --pretrain_data ${pretrain_data} --finetune_subset ${finetune_subset}" \
  --musan_root "${musan_root}" --pretrain_config "${pretrain_config}" --finetune_config "${finetune_config}" \
  --decode_config "${decode_config}" "${opts[@]+"${opts[@]}"}"
