#!/usr/bin/env bash
# LibriSpeech: data2vec-aqc Base pre-training on 960 h (or 360 h), CTC fine-tuning on Libri-light
# 10 min / 1 h / 10 h or LibriSpeech 100 h, decoding of dev/test clean/other (greedy, and with the official
# 4-gram LM when --lm_file is given).
#   ./run.sh --librispeech_root DIR [--librilight_root DIR] [--musan_root DIR] [--pretrain_data 960h|360h]
#            [--finetune_subset 10min|1h|10h|100h] [--lm_file 4-gram.arpa] [--ngpu N] [--stage N --stop_stage M]
#            [template options: ../TEMPLATE/aqc.sh --help]
# --ngpu N (N > 1) trains with one process per GPU (DDP). The configs state the reference's global batch
# (samples per update) and the training commands derive batch_bins and accum_grad from the number of ranks;
# ./run.sh --ngpu 8 --dry_run true prints the commands and the batch they give. See README.md, "Reproducing
# the paper".
# Experiments are named after the data: exp/ssl_<pretrain_data>_<config>,
# exp/asr_<finetune_subset>_<config>_<ssl name>; so a 360 h run never reuses a 960 h run's stages.
set -euo pipefail
librispeech_root=
librilight_root=
musan_root=
pretrain_data=960h
finetune_subset=10h
pretrain_config=conf/pretrain_base.yaml
finetune_config=
decode_config=conf/decode.yaml
lm_file=
tag=
init_from_pretrain=true
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
    --lm_file|--lm-file|--lm_arpa|--lm-arpa) lm_file=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --init_from_pretrain|--init-from-pretrain) init_from_pretrain=$2; shift 2 ;;
    *) opts+=("$1"); shift ;;
  esac
done
case "${pretrain_data}" in 960h|460h|360h|100h) ;; *) echo "ERROR: --pretrain_data ${pretrain_data}: expected 960h, 460h, 360h or 100h" >&2; exit 1 ;; esac
case "${finetune_subset}" in 10min|1h|10h|100h) ;; *) echo "ERROR: --finetune_subset ${finetune_subset}: expected 10min, 1h, 10h or 100h" >&2; exit 1 ;; esac
[ -n "${finetune_config}" ] || finetune_config=conf/finetune_${finetune_subset}.yaml
[ -n "${tag}" ] || tag=${pretrain_data}_$(basename "${pretrain_config}" .yaml)
if [ "${init_from_pretrain}" = true ]; then
  asr_tag=${finetune_subset}_$(basename "${finetune_config}" .yaml)_${tag}
else
  asr_tag=${finetune_subset}_$(basename "${finetune_config}" .yaml)_scratch
fi

# Letters as in the reference's dict.ltr.txt: a fixed inventory, so a 10-minute subset that lacks a
# letter still gets an output for it.
../TEMPLATE/aqc.sh --pretrain_set "train_${pretrain_data}" --finetune_set "train_${finetune_subset}" \
  --valid_set dev_other --test_sets "dev_clean dev_other test_clean test_other" \
  --local_data_opts "--librispeech_root ${librispeech_root} ${librilight_root:+--librilight_root ${librilight_root}} --pretrain_data ${pretrain_data} --finetune_subset ${finetune_subset}" \
  --musan_root "${musan_root}" --pretrain_config "${pretrain_config}" --finetune_config "${finetune_config}" \
  --decode_config "${decode_config}" --token_inventory local/letters.txt --tag "${tag}" --asr_tag "${asr_tag}" \
  --init_from_pretrain "${init_from_pretrain}" --lm_file "${lm_file}" "${opts[@]+"${opts[@]}"}"
