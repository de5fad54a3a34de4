#!/usr/bin/env bash
# What a run was made from (its record: utils/stage_inputs.py), and runs kept aside when their inputs
# changed: egs/TEMPLATE/aqc.sh's stages and utils/tuning_runs.sh share these. Sourced.
run_records_utils=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# record_diff OLD_RECORD_FILE NEW_RECORD_TEXT: which inputs differ, on one line
record_diff() {
  python "${run_records_utils}/stage_inputs.py" --diff "$1" <(printf '%s\n' "$2")
}

# move_aside DIR DEST: moves DIR to DEST, or to DEST.1, DEST.2, ... when that name is taken (a run moved
# aside within the same second as another must not land inside it); prints where it went.
move_aside() {
  local dest=$2 k=1
  while [ -e "${dest}" ]; do dest=$2.${k}; k=$((k + 1)); done
  mkdir -p "$(dirname "${dest}")"
  mv "$1" "${dest}"
  printf '%s\n' "${dest}"
}
