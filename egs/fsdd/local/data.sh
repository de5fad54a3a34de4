#!/usr/bin/env bash
# Stage 1 of egs/fsdd: find (or fetch) the Free Spoken Digit Dataset and write data/{train_pretrain,train_ft,dev,test}.
#   --fsdd_root DIR              corpus location (default: $FSDD_ROOT, else downloads/free-spoken-digit-dataset)
#   --extra_unlabelled_dir DIR   more unlabelled audio for pre-training (e.g. LibriSpeech utterances)
#   --labelled_per_digit N       labelled fine-tuning recordings per digit and speaker (default 7: 9.3 %)
set -euo pipefail
fsdd_root=${FSDD_ROOT:-}
extra_unlabelled_dir=
labelled_per_digit=7
root=$(cd "$(dirname "$0")/../../.." && pwd)
. "${root}/utils/log.sh"
. "${root}/utils/parse_options.sh"

if [ -z "${fsdd_root}" ]; then
  fsdd_root=downloads/free-spoken-digit-dataset
  if [ ! -d "${fsdd_root}/recordings" ]; then
    log "No --fsdd_root given; trying to download FSDD into ${fsdd_root}"
    mkdir -p downloads
    if ! git clone --depth 1 https://github.com/Jakobovski/free-spoken-digit-dataset "${fsdd_root}"; then
      log "ERROR: could not download FSDD. Download https://github.com/Jakobovski/free-spoken-digit-dataset"
      log "       yourself and pass --local_data_opts '--fsdd_root /path/to/free-spoken-digit-dataset' to run.sh"
      log "       (or set FSDD_ROOT)."
      exit 1
    fi
  fi
fi
python local/prepare_fsdd.py --fsdd_root "${fsdd_root}" --data_dir data \
  --labelled_per_digit "${labelled_per_digit}" ${extra_unlabelled_dir:+--extra_unlabelled_dir "${extra_unlabelled_dir}"}
