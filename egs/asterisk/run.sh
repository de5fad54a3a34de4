#!/usr/bin/env bash
# Asterisk English prompts (one professional speaker, IVR sentences): pre-train on all prompts (unlabelled),
# fine-tune a letter CTC recogniser on ~80 % of them, report WER and CER on held-out prompts (dev: every
# choice was made on it; test). Runs on 2 CPU cores.
#   ./run.sh [--asterisk_root DIR] [--compare true] [--finetune_seeds N] [--pretrain_seeds N] [--musan_root DIR]
#            [template options, see ../TEMPLATE/aqc.sh]
# --compare true also trains, at the same fine-tuning budget and head, the baselines and the paper's
# ablations (../TEMPLATE/compare.sh), each pre-trained with --pretrain_seeds seeds (default 2 with --compare,
# else 1: two pre-trainings of one config here came out 25 points of dev CER apart, so one pre-training per
# method cannot rank methods) and each fine-tuned with --finetune_seeds seeds (default 3 with --compare,
# else 1), and puts all in RESULTS.md with mean and spread.
set -euo pipefail
asterisk_root=${ASTERISK_ROOT:-}
compare=false
finetune_seeds=
pretrain_seeds=
musan_root=
local_data_opts=
. ./path.sh
. ./cmd.sh
opts=()
while [ $# -gt 0 ]; do  # our options here; the rest goes to the template
  case "$1" in
    --asterisk_root|--asterisk-root) asterisk_root=$2; shift 2 ;;
    --compare) compare=$2; shift 2 ;;
    --finetune_seeds|--finetune-seeds) finetune_seeds=$2; shift 2 ;;
    --pretrain_seeds|--pretrain-seeds) pretrain_seeds=$2; shift 2 ;;
    --musan_root|--musan-root) musan_root=$2; shift 2 ;;
    --local_data_opts|--local-data-opts) local_data_opts=$2; shift 2 ;;
    *) opts+=("$1"); shift ;;
  esac
done
if [ "${compare}" != true ] && [ "${compare}" != false ]; then
  echo "run.sh: --compare ${compare}: expected true or false" >&2; exit 1
fi
[ -n "${finetune_seeds}" ] || { [ "${compare}" = true ] && finetune_seeds=3; } || finetune_seeds=1
[ -n "${pretrain_seeds}" ] || { [ "${compare}" = true ] && pretrain_seeds=2; } || pretrain_seeds=1
[ -n "${musan_root}" ] || { [ -d ../../../shared/data/musan/noise ] && musan_root=$(cd ../../../shared/data/musan && pwd); } || true

common=(--pretrain_set train_pretrain --finetune_set train_ft --valid_set dev --test_sets "dev test"
        --local_data_opts "${asterisk_root:+--asterisk_root ${asterisk_root}} ${local_data_opts}" --musan_root "${musan_root}"
        --finetune_config conf/finetune.yaml --decode_config conf/decode.yaml
        --select_by loss --finetune_seeds "${finetune_seeds}" --pretrain_seeds "${pretrain_seeds}" --results_rank_by cer
        --results_notes "One speaker: dev and test are prompts never seen in fine-tuning (about 10 % each, by a hash of the prompt's name); every choice was made on dev. All prompts' audio, without transcripts, is in pre-training. Two runs of one data2vec-aqc pre-training config here came out 25 points of dev CER apart (README), so with --compare each method is pre-trained twice (--pretrain_seeds 2): the first tables' spreads are the fine-tuning seeds of one pre-training, where a marked difference between two pre-trained systems does not show that one method beats the other; the pooled table's spreads cover both pre-trainings and judge the differences.")

../TEMPLATE/aqc.sh "${common[@]}" --pretrain_config conf/pretrain_aqc.yaml "${opts[@]+"${opts[@]}"}"
# compare.sh runs the baselines through the same stages (4-6 of them; stages 1-3 are shared).
if [ "${compare}" = true ]; then
  ../TEMPLATE/compare.sh "${common[@]}" --pretrain_config conf/pretrain_aqc.yaml "${opts[@]+"${opts[@]}"}"
fi
