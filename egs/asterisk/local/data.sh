#!/usr/bin/env bash
# Stage 1 of egs/asterisk: data/{train_pretrain,train_ft,dev,test} from the Asterisk English prompts.
#   --asterisk_root DIR   folder with core-sounds-en.txt and wav/ (default: $ASTERISK_ROOT, else download)
set -euo pipefail
asterisk_root=${ASTERISK_ROOT:-}
root=$(cd "$(dirname "$0")/../../.." && pwd)
. "${root}/utils/log.sh"
. "${root}/utils/parse_options.sh"
if [ -z "${asterisk_root}" ]; then
  asterisk_root=downloads/asterisk-core-sounds-en
  if [ ! -f "${asterisk_root}/core-sounds-en.txt" ]; then
    url=https://downloads.asterisk.org/pub/telephony/sounds/asterisk-core-sounds-en-wav-current.tar.gz
    log "No --asterisk_root given; trying to download ${url}"
    mkdir -p "${asterisk_root}/wav"
    if ! { curl -fsSL "${url}" | tar -xz -C "${asterisk_root}/wav" && mv "${asterisk_root}/wav/core-sounds-en.txt" "${asterisk_root}/"; }; then
      log "ERROR: could not download the Asterisk prompts. Fetch ${url}, unpack it into DIR/wav with"
      log "       core-sounds-en.txt in DIR, and pass --local_data_opts '--asterisk_root DIR' to run.sh (or set ASTERISK_ROOT)."
      exit 1
    fi
  fi
fi
python local/prepare_asterisk.py --asterisk_root "${asterisk_root}" --data_dir data
