#!/usr/bin/env bash
# Free Spoken Digit Dataset: pre-train on all of its audio (unlabelled), fine-tune a CTC recogniser on
# 9 % of the labels, test on two speakers never seen in fine-tuning. About 9 minutes on 2 CPU cores
# (measured alone from a fresh clone; another job beside it costs about 1.5x: aqc/cpu_threads.py).
#   ./run.sh [--fsdd_root DIR] [--compare true] [--finetune_seeds N] [--pretrain_seeds N] [--musan_root DIR]
#            [template options, see ../TEMPLATE/aqc.sh, e.g. --extra_unlabelled_dir DIR]
# --compare true also trains, at the same fine-tuning budget and head, the baselines and the paper's
# ablations, each pre-trained with --pretrain_seeds seeds (default 2 with --compare, else 1) and each
# pre-training fine-tuned with --finetune_seeds seeds (default 3 with --compare, else 1), and puts all in
# RESULTS.md with mean and spread: log-mel features without pre-training (finetune_logmel.yaml), the same
# encoder from random initialisation, data2vec, +A and +A+Q (pretrain_data2vec*.yaml) next to data2vec-aqc.
# Two pre-training seeds because one under-states the spread here (README: data2vec's two pre-trainings
# gave 39 % and 60 % on test). That is 8 pre-trainings and 30 fine-tunings (and decodings): about 4 hours
# of stage time with 2-4 runs sharing 2 CPU cores (each pre-training 10-14 minutes, each fine-tuning 3-4).
set -euo pipefail
fsdd_root=${FSDD_ROOT:-}
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
    --fsdd_root|--fsdd-root) fsdd_root=$2; shift 2 ;;
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
# The shared noise set beside the repository stands in for MUSAN when present (as in CI).
[ -n "${musan_root}" ] || { [ -d ../../../shared/data/musan/noise ] && musan_root=$(cd ../../../shared/data/musan && pwd); } || true

common=(--pretrain_set train_pretrain --finetune_set train_ft --valid_set dev --test_sets "dev test"
        --local_data_opts "${fsdd_root:+--fsdd_root ${fsdd_root}} ${local_data_opts}" --musan_root "${musan_root}"
        --token_type word --finetune_config conf/finetune.yaml --decode_config conf/decode.yaml
        --select_by loss --finetune_seeds "${finetune_seeds}" --pretrain_seeds "${pretrain_seeds}"
        --results_notes "One word per utterance: WER is the digit error rate (chance: 90 %). dev: held-out takes of the fine-tuning speakers (used for every choice); test: every recording of theo and yweweler, speakers never seen in fine-tuning.")

../TEMPLATE/aqc.sh "${common[@]}" --pretrain_config conf/pretrain_aqc.yaml \
  "${opts[@]+"${opts[@]}"}"
# compare.sh runs the baselines through the same stages (4-6 of them; stages 1-3 are shared).
if [ "${compare}" = true ]; then
  ../TEMPLATE/compare.sh "${common[@]}" --pretrain_config conf/pretrain_aqc.yaml "${opts[@]+"${opts[@]}"}"
fi
