#!/usr/bin/env bash
# Shared stages of every aqc recipe; a corpus's run.sh sets its options and calls this script.
#
# Stages:
#   1. data preparation (local/data.sh) into Kaldi-style data dirs, validated
#   2. MUSAN noise list (and RIR list) for the augmentation
#   3. format: 16 kHz mono audio, utt2num_samples, duration filters, token list
#   4. SSL pre-training (data2vec-aqc; ablations by --pretrain_config)
#   5. CTC fine-tuning through the aqc frontend
#   6. decoding and scoring into RESULTS.md
#
# Options (each --name value):
#   --stage, --stop_stage    first and last stage to run (1..6)
#   --nj                     parallel jobs for data preparation, formatting and decoding
#   --ngpu                   GPUs for training (0: CPU)
#   --num_workers            data-loader workers for training
#   --pretrain_set, --finetune_set, --valid_set, --test_sets   data directory names
#   --local_data_opts        options passed to local/data.sh
#   --musan_root, --musan_subsets, --rir_root   augmentation sources (empty musan_root: no background noise)
#   --pretrain_config, --finetune_config, --decode_config
#   --pretrain_args, --finetune_args, --decode_args  extra options for the training/decoding commands
#   --token_type (char|word|bpe), --nbpe
#   --init_from_pretrain (true|false): false fine-tunes a randomly initialised encoder (a baseline)
#   --tag                    name of this run's experiment directories (default: from the config names)
#   --results_notes          text placed at the top of RESULTS.md (e.g. what the WER column means here)
#   --min_duration, --max_duration   seconds, for stage 3 filters
#   --dumpdir, --expdir
# Environment (the recipe's cmd.sh): pretrain_launcher, finetune_launcher, decode_launcher prefix the
# commands of stages 4, 5 and 6 (torchrun, srun, ...); empty runs them directly.
set -euo pipefail

stage=1
stop_stage=6
nj=2
ngpu=0
num_workers=0
pretrain_set=
finetune_set=
valid_set=
test_sets=
local_data_opts=
musan_root=
musan_subsets=noise/free-sound
rir_root=
pretrain_config=
finetune_config=
decode_config=
pretrain_args=
finetune_args=
decode_args=
token_type=char
nbpe=100
init_from_pretrain=true
tag=
results_notes=
min_duration=0.1
max_duration=30
dumpdir=dump
expdir=exp

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../utils/log.sh
. "${root}/utils/log.sh"
# shellcheck source=../../utils/parse_options.sh
. "${root}/utils/parse_options.sh"

for required in pretrain_set finetune_set valid_set test_sets pretrain_config finetune_config decode_config; do
  if [ -z "${!required}" ]; then log "ERROR: --${required} is required (set it in run.sh)"; exit 1; fi
done
utils=${root}/utils
[ -n "${tag}" ] || tag=$(basename "${pretrain_config}" .yaml)
ssl_exp=${expdir}/ssl_${tag}
asr_tag=$(basename "${finetune_config}" .yaml)_${tag}
[ "${init_from_pretrain}" = true ] || asr_tag=$(basename "${finetune_config}" .yaml)_scratch
asr_exp=${expdir}/asr_${asr_tag}
token_dir=data/token_list/${token_type}
[ "${token_type}" = bpe ] && token_dir=data/token_list/bpe${nbpe}
mkdir -p "${expdir}"
stage_times=${expdir}/stage_times.tsv

# A stage's marker is written only after it succeeded, so a failed stage is redone and a finished one skipped.
done_marker() { echo "$1/.done.$2"; }
run_stage() {  # run_stage N name marker-dir command...
  local n=$1 name=$2 dir=$3; shift 3
  if [ "${stage}" -gt "${n}" ] || [ "${stop_stage}" -lt "${n}" ]; then return 0; fi
  local marker; marker=$(done_marker "${dir}" "${n}")
  if [ -f "${marker}" ]; then log "Stage ${n}: ${name}: already done (${marker}); skipping"; return 0; fi
  log "Stage ${n}: ${name}"
  local start=${SECONDS}
  "$@"
  mkdir -p "${dir}"; touch "${marker}"
  printf '%s\t%s\t%s\n' "${n}" "${name}" "$((SECONDS - start))" >> "${stage_times}"
  log "Stage ${n}: ${name}: done in $((SECONDS - start)) s"
}

all_sets() { echo "${pretrain_set} ${finetune_set} ${valid_set} ${test_sets}" | tr ' ' '\n' | sort -u | xargs; }

stage1() {
  # shellcheck disable=SC2086
  local/data.sh ${local_data_opts}
  for dset in $(all_sets); do
    python "${utils}/validate_data_dir.py" --no_audio "data/${dset}"
  done
}

stage2() {
  mkdir -p data/augment
  if [ -n "${musan_root}" ]; then
    python "${utils}/make_noise_list.py" --musan_root "${musan_root}" --subsets "${musan_subsets}" \
      --out_dir data/augment/noise
  else
    log "No --musan_root: pre-training runs without background noise"
  fi
  if [ -n "${rir_root}" ]; then
    python "${utils}/make_rir_list.py" --rir_dir "${rir_root}" --out_dir data/augment/rir
  fi
}

stage3() {
  for dset in $(all_sets); do
    python "${utils}/format_wav_scp.py" --in_dir "data/${dset}" --out_dir "${dumpdir}/${dset}" --nj "${nj}" \
      --min_duration "${min_duration}" --max_duration "${max_duration}"
  done
  python "${utils}/make_token_list.py" --text "${dumpdir}/${finetune_set}/text" --token_type "${token_type}" \
    --nbpe "${nbpe}" --bpe_model_prefix "${token_dir}/bpe" --output "${token_dir}/tokens.txt"
}

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

stage4() {
  # shellcheck disable=SC2046,SC2086
  ${pretrain_launcher:-} python -m aqc.bin.ssl_train --config "${pretrain_config}" \
    --train_data_path_and_name_and_type "${dumpdir}/${pretrain_set}/wav.scp,speech,sound" \
    --train_shape_file "${dumpdir}/${pretrain_set}/utt2num_samples" \
    --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/wav.scp,speech,sound" \
    --valid_shape_file "${dumpdir}/${valid_set}/utt2num_samples" \
    --output_dir "${ssl_exp}" --ngpu "${ngpu}" --num_workers "${num_workers}" --resume true \
    $(augmentation_args) ${pretrain_args}
  python -m aqc.bin.export_model --ssl_exp "${ssl_exp}" --output "${ssl_exp}/aqc_model.pt"
}

stage5() {
  local upstream=$(pwd)/${ssl_exp}/aqc_model.pt
  if [ "${init_from_pretrain}" != true ]; then
    # The "no pre-training" baseline: the same encoder, untrained.
    upstream=$(pwd)/${asr_exp}/random_init_model.pt
    python -m aqc.bin.export_model --random_init true --config "${pretrain_config}" --output "${upstream}"
  fi
  # shellcheck disable=SC2086
  ${finetune_launcher:-} python -m aqc.bin.asr_train --config "${finetune_config}" \
    --token_type "${token_type}" --token_list "${token_dir}/tokens.txt" \
    $([ "${token_type}" = bpe ] && echo --bpemodel "${token_dir}/bpe.model") \
    --train_data_path_and_name_and_type "${dumpdir}/${finetune_set}/wav.scp,speech,sound" \
    --train_data_path_and_name_and_type "${dumpdir}/${finetune_set}/text,text,text" \
    --train_shape_file "${dumpdir}/${finetune_set}/utt2num_samples" \
    --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/wav.scp,speech,sound" \
    --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/text,text,text" \
    --valid_shape_file "${dumpdir}/${valid_set}/utt2num_samples" \
    --output_dir "${asr_exp}" --ngpu "${ngpu}" --num_workers "${num_workers}" --resume true \
    --frontend_conf "model_file=${upstream}" ${finetune_args}
}

stage6() {
  local model; model=$(ls "${asr_exp}"/valid.loss.best.pth 2>/dev/null || ls -v "${asr_exp}"/*epoch.pth | tail -n 1)
  local decode_tag; decode_tag=decode_$(basename "${decode_config}" .yaml)
  mkdir -p "${asr_exp}/${decode_tag}"
  cp "${decode_config}" "${asr_exp}/${decode_tag}/config.yaml"  # what decoded, beside the results
  for dset in ${test_sets}; do
    local out=${asr_exp}/${decode_tag}/${dset}
    # shellcheck disable=SC2086
    ${decode_launcher:-} python -m aqc.bin.asr_inference --config "${decode_config}" --ngpu "$(( ngpu > 0 ? 1 : 0 ))" \
      --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${model}" \
      --data_path_and_name_and_type "${dumpdir}/${dset}/wav.scp,speech,sound" \
      --key_file "${dumpdir}/${dset}/wav.scp" --output_dir "${out}" ${decode_args}
    python -m aqc.bin.score --ref "${dumpdir}/${dset}/text" --hyp "${out}/1best_recog/text" --out_dir "${out}/score"
  done
}

write_results() {
  # One table over every fine-tuned model of this recipe (so baselines run with other options appear too).
  local rows=()
  for scores in "${expdir}"/asr_*/decode_*/*/score/scores.json; do
    [ -f "${scores}" ] || continue
    local rel=${scores#"${expdir}"/}
    rows+=(--test_set "${rel%%/score/scores.json}" "${scores}")
  done
  python -m aqc.bin.make_results --exp_dir "${expdir}" --out RESULTS.md --stage_times "${stage_times}" \
    ${results_notes:+--notes "${results_notes}"} "${rows[@]+"${rows[@]}"}"
  log "Wrote $(pwd)/RESULTS.md"
}

run_stage 1 "data preparation" data stage1
run_stage 2 "noise and RIR lists" data/augment stage2
run_stage 3 "format, filter, token list" "${dumpdir}" stage3
if [ "${init_from_pretrain}" = true ]; then
  run_stage 4 "SSL pre-training (${ssl_exp})" "${ssl_exp}" stage4
fi
run_stage 5 "CTC fine-tuning (${asr_exp})" "${asr_exp}" stage5
run_stage 6 "decoding and scoring (${asr_exp})" "${asr_exp}" stage6
# RESULTS.md is rewritten whenever stage 6 is in range (cheap), so it includes stage 6's time and every
# system decoded so far.
if [ "${stop_stage}" -ge 6 ]; then write_results; fi
log "Finished stages ${stage}..${stop_stage}"
