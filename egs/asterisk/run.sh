#!/usr/bin/env bash
# Asterisk English prompts (one professional speaker, IVR sentences): pre-train on all prompts, fine-tune
# a letter CTC recogniser on ~80 % of them, report WER and CER on held-out prompts. Runs on 2 CPU cores.
#   ./run.sh [--asterisk_root DIR] [--musan_root DIR] [template options, see ../TEMPLATE/aqc.sh]
set -euo pipefail
asterisk_root=${ASTERISK_ROOT:-}
musan_root=
local_data_opts=
. ./path.sh
. ./cmd.sh
opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --asterisk_root|--asterisk-root) asterisk_root=$2; shift 2 ;;
    --musan_root|--musan-root) musan_root=$2; shift 2 ;;
    --local_data_opts|--local-data-opts) local_data_opts=$2; shift 2 ;;
    *) opts+=("$1"); shift ;;
  esac
done
[ -n "${musan_root}" ] || { [ -d ../../../shared/data/musan/noise ] && musan_root=$(cd ../../../shared/data/musan && pwd); } || true

../TEMPLATE/aqc.sh --pretrain_set train_pretrain --finetune_set train_ft --valid_set dev --test_sets "dev test" \
  --local_data_opts "${asterisk_root:+--asterisk_root ${asterisk_root}} ${local_data_opts}" --musan_root "${musan_root}" \
  --pretrain_config conf/pretrain.yaml --finetune_config conf/finetune.yaml --decode_config conf/decode.yaml \
  --select_by loss "${opts[@]+"${opts[@]}"}"
