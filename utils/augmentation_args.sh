#!/usr/bin/env bash
# augmentation_args: the --augmentation_conf options that point pre-training at the recipe's stage-2 lists,
# from a recipe directory: data/augment/noise/wav.scp (without it, no background noise: background_p=0) and
# data/augment/rir/wav.scp (with it, real room impulse responses instead of the Freeverb room). Sourced by
# egs/TEMPLATE/aqc.sh (stage 4) and egs/TEMPLATE/tune_pretrain.sh, so tuning runs augment as the recipe does;
# both records name the lists through augment_noise_list and augment_rir_list, the files read here.
augment_noise_list=data/augment/noise/wav.scp
augment_rir_list=data/augment/rir/wav.scp
augmentation_args() {
  local args=()
  if [ -f "${augment_noise_list}" ]; then
    args+=(--augmentation_conf "noise_scp=$(pwd)/${augment_noise_list}")
  else
    args+=(--augmentation_conf background_p=0)  # no noise list (no --musan_root): no background noise
  fi
  [ -f "${augment_rir_list}" ] && args+=(--augmentation_conf "rir_scp=$(pwd)/${augment_rir_list}")
  echo "${args[@]+"${args[@]}"}"
}
