#!/usr/bin/env bash
# augmentation_args: the --augmentation_conf options that point pre-training at the recipe's stage-2 lists,
# from a recipe directory: data/augment/noise/wav.scp (without it, no background noise: background_p=0) and
# data/augment/rir/wav.scp (with it, real room impulse responses instead of the Freeverb room). Sourced by
# egs/TEMPLATE/aqc.sh (stage 4) and egs/TEMPLATE/tune_pretrain.sh, so tuning runs augment as the recipe does.
augmentation_args() {
  local args=()
  if [ -f data/augment/noise/wav.scp ]; then
    args+=(--augmentation_conf "noise_scp=$(pwd)/data/augment/noise/wav.scp")
  else
    args+=(--augmentation_conf background_p=0)  # no noise list (no --musan_root): no background noise
  fi
  [ -f data/augment/rir/wav.scp ] && args+=(--augmentation_conf "rir_scp=$(pwd)/data/augment/rir/wav.scp")
  echo "${args[@]+"${args[@]}"}"
}
