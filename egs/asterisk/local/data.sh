#!/usr/bin/env bash
# Stage 1 of egs/asterisk: data/{train_pretrain,train_ft,dev,test} from the Asterisk English prompts.
#   --asterisk_root DIR   folder with core-sounds-en.txt and wav/ (default: $ASTERISK_ROOT, else found or downloaded)
set -euo pipefail
asterisk_root=${ASTERISK_ROOT:-}
root=$(cd "$(dirname "$0")/../../.." && pwd)
. "${root}/utils/log.sh"
. "${root}/utils/parse_options.sh"
# Where the prompts are, in this order: --asterisk_root / $ASTERISK_ROOT; a copy fetched earlier into
# downloads/; a copy beside the repository (../asterisk-core-sounds-en, ../shared/data/asterisk_en); a
# download; else stop, saying what to fetch.
if [ -z "${asterisk_root}" ]; then
  candidates=(downloads/asterisk-core-sounds-en "${root}/../asterisk-core-sounds-en" "${root}/../shared/data/asterisk_en")
  for candidate in "${candidates[@]}"; do
    if [ -f "${candidate}/core-sounds-en.txt" ]; then asterisk_root=$(cd "${candidate}" && pwd); break; fi
  done
  if [ -n "${asterisk_root}" ]; then
    log "Using the Asterisk prompts found at ${asterisk_root} (--asterisk_root or ASTERISK_ROOT picks another)"
  else
    asterisk_root=downloads/asterisk-core-sounds-en
    url=https://downloads.asterisk.org/pub/telephony/sounds/asterisk-core-sounds-en-wav-current.tar.gz
    log "Asterisk prompts not found (looked in ${candidates[*]}); trying to download ${url}"
    mkdir -p "${asterisk_root}/wav"
    if ! { curl -fsSL "${url}" | tar -xz -C "${asterisk_root}/wav" && mv "${asterisk_root}/wav/core-sounds-en.txt" "${asterisk_root}/"; }; then
      rm -rf "${asterisk_root}"
      log "ERROR: could not download the Asterisk prompts. Fetch ${url}, unpack it into DIR/wav with"
      log "       core-sounds-en.txt in DIR (DIR beside the repository as asterisk-core-sounds-en/ is found by itself),"
      log "       or run ./run.sh --asterisk_root DIR (or set ASTERISK_ROOT)."
      exit 1
    fi
  fi
fi
python local/prepare_asterisk.py --asterisk_root "${asterisk_root}" --data_dir data
