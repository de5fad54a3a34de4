#!/usr/bin/env bash
# The baselines and ablations of a recipe's --compare true, at the fine-tuning budget and head of its
# default system: data2vec, +A (augmentation only) and +A+Q (no clustering) pre-trained from the recipe's
# conf/pretrain_data2vec.yaml, pretrain_data2vec_a.yaml and pretrain_data2vec_aq.yaml; the same encoder
# from random initialisation; and ESPnet's log-mel frontend without pre-training (conf/finetune_logmel.yaml).
# Stages 1-3 are the default system's: only pre-training, fine-tuning and decoding (4-6) run again, those
# of them within --stage..--stop_stage; baselines are not packed (stage 7), they are for RESULTS.md.
#   ../TEMPLATE/compare.sh --pretrain_config conf/pretrain_aqc.yaml [the recipe's aqc.sh options]
# (the last --pretrain_config given is the default system's.) Call it after the default system's aqc.sh
# run, which has checked the options.
# A pre-trained baseline fine-tunes with the recipe's --finetune_config unless the recipe has its own for it,
# conf/finetune_<method>.yaml (conf/pretrain_data2vec.yaml -> conf/finetune_data2vec.yaml): a setting tuned
# on dev for data2vec-aqc that costs a baseline on dev is not imposed on it. Its experiment keeps the name
# the shared config gives (exp/asr_finetune_pretrain_data2vec), so a row means the same system in every
# round; RESULTS.md's systems table names the config each row ran.
set -euo pipefail
template=$(dirname "$0")/aqc.sh
stage=1
stop_stage=6
aqc_config=
finetune_config=
opts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop_stage|--stop-stage) stop_stage=$2; shift 2 ;;
    --pretrain_config|--pretrain-config) aqc_config=$2; shift 2 ;;
    --finetune_config|--finetune-config) finetune_config=$2; opts+=("$1" "$2"); shift 2 ;;
    *) opts+=("$1"); shift ;;
  esac
done
[ -n "${aqc_config}" ] || { echo "compare.sh: --pretrain_config (the default system's) is required" >&2; exit 1; }
[ -n "${finetune_config}" ] || { echo "compare.sh: --finetune_config (the default system's) is required" >&2; exit 1; }
for value in "${stage}" "${stop_stage}"; do  # used in arithmetic below, where a word would count as 0
  [[ ${value} =~ ^[1-7]$ ]] || { echo "compare.sh: --stage/--stop_stage ${value}: expected 1 to 7" >&2; exit 1; }
done
(( stage >= 4 )) || stage=4
(( stop_stage <= 6 )) || stop_stage=6
if (( stop_stage < stage )); then
  echo "compare.sh: the baselines run stages 4-6 (not packed), none of them asked for: nothing to compare" >&2; exit 0
fi
pretrain_configs=(conf/pretrain_data2vec.yaml conf/pretrain_data2vec_aq.yaml conf/pretrain_data2vec_a.yaml)
for config in "${pretrain_configs[@]}" conf/finetune_logmel.yaml; do  # all present before hours of training start
  [ -f "${config}" ] || { echo "compare.sh: ${config} not found: --compare true needs it in $(pwd)/conf" >&2; exit 1; }
done
# The recipe's options first, then the stage range: each system's own come last, so they win. The cheapest
# systems first (no pre-training), so an interrupted comparison has its baselines.
opts+=(--stage "${stage}" --stop_stage "${stop_stage}")
"${template}" "${opts[@]}" --pretrain_config "${aqc_config}" --finetune_config conf/finetune_logmel.yaml
"${template}" "${opts[@]}" --pretrain_config "${aqc_config}" --init_from_pretrain false
for config in "${pretrain_configs[@]}"; do
  name=$(basename "${config}" .yaml)
  own=conf/finetune_${name#pretrain_}.yaml
  if [ -f "${own}" ]; then
    "${template}" "${opts[@]}" --pretrain_config "${config}" --finetune_config "${own}" \
      --finetune_name "$(basename "${finetune_config}" .yaml)"
  else
    "${template}" "${opts[@]}" --pretrain_config "${config}"
  fi
done
