#!/usr/bin/env bash
# Tuning runs for a pre-training method's schedule: each setting pre-trains at the recipe's full budget
# into exp/tune/<config>_<name>, probed after each epoch on the fine-tuning train and dev sets (never a test
# set), and exports the upstream the recipe's default --ssl_select probe would pick, so that
# ../TEMPLATE/tune_finetune.sh can fine-tune from it. Run from a recipe directory after stages 1-3.
#   ../TEMPLATE/tune_pretrain.sh [--pretrain_set S] [--finetune_set S] [--valid_set S] [--dumpdir D]
#                                CONFIG NAME "OVERRIDES" [NAME "OVERRIDES" ...]
# e.g. ../TEMPLATE/tune_pretrain.sh conf/pretrain_data2vec.yaml ema999 "--model_conf ema_decay=0.999"
#      ../TEMPLATE/tune_finetune.sh exp/asr_finetune_pretrain_data2vec conf/decode.yaml d2v_ema999 \
#        "--frontend_conf model_file=$(pwd)/exp/tune/pretrain_data2vec_ema999/aqc_model.probe.pt"
# Prints one line per setting: the probe's error after the last epoch and its lowest, the exported file, and
# the thread counts it trained with (settings compare bit for bit only on one count: aqc.results.thread_use).
# Augmentation reads the recipe's stage-2 noise and RIR lists as stage 4 does (utils/augmentation_args.sh).
# A finished setting is only reported again while its inputs are what its .done records (the config, the
# overrides, the data directories and the noise and RIR lists, as the recipe's stage 4 records them);
# otherwise it trains afresh, saying what changed (the old run is kept as <dir>.superseded.<time>).
set -euo pipefail
. ./path.sh
pretrain_set=train_pretrain finetune_set=train_ft valid_set=dev dumpdir=dump
while [ $# -gt 0 ]; do
  case "$1" in
    --pretrain_set|--pretrain-set) pretrain_set=$2; shift 2 ;;
    --finetune_set|--finetune-set) finetune_set=$2; shift 2 ;;
    --valid_set|--valid-set) valid_set=$2; shift 2 ;;
    --dumpdir) dumpdir=$2; shift 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 3 ] || [ $(( ($# - 1) % 2 )) -ne 0 ]; then
  echo "usage: $0 [--pretrain_set S] [--finetune_set S] [--valid_set S] [--dumpdir D] CONFIG NAME \"OVERRIDES\" [NAME \"OVERRIDES\" ...]" >&2
  exit 1
fi
config=$1; shift
[ -f "${config}" ] || { echo "$0: pre-training config ${config} not found" >&2; exit 1; }
for set in "${pretrain_set}" "${finetune_set}" "${valid_set}"; do
  [ -f "${dumpdir}/${set}/wav.scp" ] || { echo "$0: ${dumpdir}/${set}/wav.scp not found: run the recipe's stages 1-3 first" >&2; exit 1; }
done
# shellcheck source=../../utils/augmentation_args.sh
. "${AQC_ROOT}/utils/augmentation_args.sh"  # the recipe's noise and RIR lists, as stage 4 passes them
# shellcheck source=../../utils/tuning_runs.sh
. "${AQC_ROOT}/utils/tuning_runs.sh"
while [ $# -gt 0 ]; do
  name=$1 overrides=$2; shift 2
  out=exp/tune/$(basename "${config}" .yaml)_${name}
  record=$(python "${AQC_ROOT}/utils/stage_inputs.py" "yaml:config=${config}" "opt:overrides=${overrides}" \
    "dir:train=${dumpdir}/${pretrain_set}" "dir:valid=${dumpdir}/${valid_set}" \
    "dir:probe_train=${dumpdir}/${finetune_set}" "file:noise_list=${augment_noise_list}" \
    "file:rir_list=${augment_rir_list}")
  if tuning_run_begin "${out}" "${record}" "${name}"; then
    # shellcheck disable=SC2046,SC2086
    python -m aqc.bin.ssl_train --config "${config}" \
      --train_data_path_and_name_and_type "${dumpdir}/${pretrain_set}/wav.scp,speech,sound" \
      --train_shape_file "${dumpdir}/${pretrain_set}/utt2num_samples" \
      --valid_data_path_and_name_and_type "${dumpdir}/${valid_set}/wav.scp,speech,sound" \
      --valid_shape_file "${dumpdir}/${valid_set}/utt2num_samples" \
      --output_dir "${out}" --ngpu 0 --resume true $(augmentation_args) \
      --probe_train_data "${dumpdir}/${finetune_set}" --probe_dev_data "${dumpdir}/${valid_set}" ${overrides} \
      >> "${out}/train.log" 2>&1 || { echo "$0: ${name} failed: see ${out}/train.log" >&2; exit 1; }
    python -m aqc.bin.export_model --ssl_exp "${out}" --select probe --output "${out}/aqc_model.probe.pt" \
      > "${out}/export.log" 2>&1 || { echo "$0: exporting ${name} failed: see ${out}/export.log" >&2; exit 1; }
    tuning_run_end "${out}" "${record}"
  fi
  python - "${out}" "${overrides}" <<'PY'
import json, sys
from aqc.results import thread_use
out, overrides = sys.argv[1:]
rows = [json.loads(line) for line in open(out + "/probe/scores.jsonl")]
last, best = rows[-1], min(rows, key=lambda r: r["best_error"])
chosen = json.load(open(out + "/aqc_model.probe.pt.json"))
print(f"{out}\t{overrides}\tlast epoch {last['epoch']}: {100 * last['best_error']:.1f} %\t"
      f"best epoch {best['epoch']}: {100 * best['best_error']:.1f} %\t{out}/aqc_model.probe.pt "
      f"(update {chosen.get('num_updates')})\tthreads: {thread_use(out)}")
PY
done
