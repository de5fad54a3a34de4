#!/usr/bin/env bash
# Tuning runs for fine-tuning: each setting trains as an existing fine-tuning experiment did (its
# config.yaml: data, tokens, upstream, schedule) with the given overrides, into exp/tune_ft/<name>, decodes
# the experiment's valid set (never a test set) and prints its error rates and the thread counts it trained
# with (aqc.results.thread_use). Run from a recipe directory.
#   ../TEMPLATE/tune_finetune.sh ASR_EXP DECODE_CONFIG NAME "OVERRIDES" [NAME "OVERRIDES" ...]
# e.g. ../TEMPLATE/tune_finetune.sh exp/asr_finetune_pretrain_aqc conf/decode.yaml frozen \
#        "--frontend_conf freeze_encoder_steps=1000"
# The checkpoint decoded is valid.loss.best.pth (the recipes' --select_by loss). A finished setting is only
# scored again while its inputs are what its .done records (utils/stage_inputs.py, as the recipe stages
# record theirs: the experiment's config, the upstream file, the data, the decoding config, the overrides);
# otherwise it starts afresh, saying what changed (the old one is kept as <name>.superseded.<time>). An
# interrupted setting with the same inputs resumes from its last epoch (utils/tuning_runs.sh).
set -euo pipefail
. ./path.sh
if [ $# -lt 4 ] || [ $(( ($# - 2) % 2 )) -ne 0 ]; then
  echo "usage: $0 ASR_EXP DECODE_CONFIG NAME \"OVERRIDES\" [NAME \"OVERRIDES\" ...]" >&2; exit 1
fi
base=$1 decode_config=$2; shift 2
[ -f "${base}/config.yaml" ] || { echo "$0: ${base}/config.yaml not found: name a finished fine-tuning experiment" >&2; exit 1; }
[ -f "${decode_config}" ] || { echo "$0: decoding config ${decode_config} not found" >&2; exit 1; }
# the valid and training sets' audio lists and the upstream file (none for log-mel), from the experiment's config
read -r valid_scp train_scp upstream < <(python - "${base}/config.yaml" <<'PY'
import sys, yaml
conf = yaml.safe_load(open(sys.argv[1]))
speech = [next(path for path, name, _ in conf[f"{split}_data_path_and_name_and_type"] if name == "speech")
          for split in ("valid", "train")]
print(*speech, (conf.get("frontend_conf") or {}).get("model_file") or "")
PY
)
valid_set=$(basename "$(dirname "${valid_scp}")")
# shellcheck source=../../utils/tuning_runs.sh
. "${AQC_ROOT}/utils/tuning_runs.sh"
[ -f "data/${valid_set}/text" ] || { echo "$0: data/${valid_set}/text not found (the reference of ${valid_scp})" >&2; exit 1; }
while [ $# -gt 0 ]; do
  name=$1 overrides=$2; shift 2
  out=exp/tune_ft/${name}
  record=$(python "${AQC_ROOT}/utils/stage_inputs.py" "yaml:base_config=${base}/config.yaml" \
    "opt:overrides=${overrides}" "yaml:decode_config=${decode_config}" "dir:train=$(dirname "${train_scp}")" \
    "dir:valid=$(dirname "${valid_scp}")" "file:valid_text=data/${valid_set}/text" \
    ${upstream:+"file:upstream_model=${upstream}"})
  if tuning_run_begin "${out}" "${record}" "${name}"; then
    # ESPnet's saved config also records what is not an option (required, version, distributed)
    python - "${base}/config.yaml" "${out}/base_config.yaml" <<'PY'
import sys, yaml
conf = yaml.safe_load(open(sys.argv[1]))
for key in ("config", "required", "version", "distributed", "output_dir"):
    conf.pop(key, None)
yaml.safe_dump(conf, open(sys.argv[2], "w"), sort_keys=False)
PY
    # shellcheck disable=SC2086
    python -m aqc.bin.asr_train --config "${out}/base_config.yaml" --output_dir "${out}" --resume true \
      ${overrides} >> "${out}/train.log" 2>&1 || { echo "$0: ${name} failed: see ${out}/train.log" >&2; exit 1; }
    python -m aqc.bin.asr_inference --config "${decode_config}" --ngpu 0 --asr_train_config "${out}/config.yaml" \
      --asr_model_file "${out}/valid.loss.best.pth" --data_path_and_name_and_type "${valid_scp},speech,sound" \
      --key_file "${valid_scp}" --output_dir "${out}/decode" > "${out}/decode.log" 2>&1 \
      || { echo "$0: decoding ${name} failed: see ${out}/decode.log" >&2; exit 1; }
    python -m aqc.bin.score --ref "data/${valid_set}/text" --hyp "${out}/decode/1best_recog/text" \
      --out_dir "${out}/decode/score" --require_all true > /dev/null
    tuning_run_end "${out}" "${record}"
  fi
  python - "${out}" "${overrides}" "${valid_set}" <<'PY'
import json, sys
from aqc.results import thread_use
out, overrides, valid_set = sys.argv[1:]
s = json.load(open(out + "/decode/score/scores.json"))
print(f"{out}\t{overrides}\t{valid_set} WER {s['wer']['rate']:.1f} %\tCER {s['cer']['rate']:.1f} %\t"
      f"threads: {thread_use(out)}")
PY
done
