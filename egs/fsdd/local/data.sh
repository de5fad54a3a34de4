#!/usr/bin/env bash
# Stage 1 of egs/fsdd: find (or fetch) the Free Spoken Digit Dataset and write data/{train_pretrain,train_ft,dev,test}.
#   --fsdd_root DIR              corpus location (default: $FSDD_ROOT, else found or downloaded: see below)
#   --labelled_per_digit N       labelled fine-tuning recordings per digit and speaker (default 7: 9.3 %)
set -euo pipefail
fsdd_root=${FSDD_ROOT:-}
labelled_per_digit=7
root=$(cd "$(dirname "$0")/../../.." && pwd)
. "${root}/utils/log.sh"
. "${root}/utils/parse_options.sh"

# Where the corpus is, in this order: --fsdd_root / $FSDD_ROOT; a copy fetched earlier into downloads/; a
# copy beside the repository (../free-spoken-digit-dataset, ../shared/data/fsdd); a download (git clone);
# else stop, saying what to fetch.
if [ -z "${fsdd_root}" ]; then
  candidates=(downloads/free-spoken-digit-dataset "${root}/../free-spoken-digit-dataset" "${root}/../shared/data/fsdd")
  for candidate in "${candidates[@]}"; do
    if [ -d "${candidate}/recordings" ]; then fsdd_root=$(cd "${candidate}" && pwd); break; fi
  done
  if [ -n "${fsdd_root}" ]; then
    log "Using FSDD found at ${fsdd_root} (--fsdd_root or FSDD_ROOT picks another)"
  else
    fsdd_root=downloads/free-spoken-digit-dataset
    log "FSDD not found (looked in ${candidates[*]}); trying to download it into ${fsdd_root}"
    mkdir -p downloads
    if ! git clone --depth 1 https://github.com/Jakobovski/free-spoken-digit-dataset "${fsdd_root}"; then
      rm -rf "${fsdd_root}"
      log "ERROR: could not download FSDD. Fetch https://github.com/Jakobovski/free-spoken-digit-dataset (a git"
      log "       clone or its zip) and either put it beside the repository as free-spoken-digit-dataset/, or run"
      log "       ./run.sh --fsdd_root /path/to/free-spoken-digit-dataset (or set FSDD_ROOT)."
      exit 1
    fi
  fi
fi
python local/prepare_fsdd.py --fsdd_root "${fsdd_root}" --data_dir data \
  --labelled_per_digit "${labelled_per_digit}"
