#!/usr/bin/env bash
# Tuning runs for a pre-training method's schedule: each setting pre-trains at the recipe's full budget
# into exp/tune/<name> and is scored by the probe on the dev split (never test): the digit error of the
# last epoch's best layer, and the lowest over epochs. Run after stages 1-3.
#   local/tune_pretrain.sh CONFIG NAME "OVERRIDES" [NAME "OVERRIDES" ...]
# e.g. local/tune_pretrain.sh conf/pretrain_data2vec.yaml ema999 "--model_conf ema_decay=0.999"
# Prints one line per setting; the chosen one goes into CONFIG with the table in its comments.
set -euo pipefail
. ./path.sh
config=$1; shift
if [ $# -lt 2 ] || [ $(( $# % 2 )) -ne 0 ]; then
  echo "usage: $0 CONFIG NAME \"OVERRIDES\" [NAME \"OVERRIDES\" ...]" >&2; exit 1
fi
noise=()
[ -f data/augment/noise/wav.scp ] && noise=(--augmentation_conf "noise_scp=$(pwd)/data/augment/noise/wav.scp")
[ -f data/augment/noise/wav.scp ] || noise=(--augmentation_conf background_p=0)
while [ $# -gt 0 ]; do
  name=$1 overrides=$2; shift 2
  out=exp/tune/$(basename "${config}" .yaml)_${name}
  if [ ! -f "${out}/probe/scores.jsonl" ] || [ ! -f "${out}/.done" ]; then
    mkdir -p "${out}"
    # shellcheck disable=SC2086
    python -m aqc.bin.ssl_train --config "${config}" \
      --train_data_path_and_name_and_type dump/train_pretrain/wav.scp,speech,sound \
      --train_shape_file dump/train_pretrain/utt2num_samples \
      --valid_data_path_and_name_and_type dump/dev/wav.scp,speech,sound \
      --valid_shape_file dump/dev/utt2num_samples \
      --output_dir "${out}" --ngpu 0 --resume true "${noise[@]}" \
      --probe_train_data dump/train_ft --probe_dev_data dump/dev ${overrides} > "${out}/train.log" 2>&1
    printf '%s\n' "${overrides}" > "${out}/.done"
  fi
  python - "${out}" "${overrides}" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1] + "/probe/scores.jsonl")]
last, best = rows[-1], min(rows, key=lambda r: r["best_error"])
print(f"{sys.argv[1]}\t{sys.argv[2]}\tlast epoch {last['epoch']}: {100 * last['best_error']:.1f} %\t"
      f"best epoch {best['epoch']}: {100 * best['best_error']:.1f} %")
PY
done
