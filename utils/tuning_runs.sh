#!/usr/bin/env bash
# A tuning setting's directory and its record, for egs/TEMPLATE/tune_pretrain.sh and tune_finetune.sh.
# RECORD is utils/stage_inputs.py's record of what the setting is made from (as the recipe stages keep
# theirs). Sourced.
# shellcheck source=run_records.sh
. "$(dirname "${BASH_SOURCE[0]}")/run_records.sh"

#   if tuning_run_begin OUT RECORD NAME; then <train into OUT, resuming what is there>; tuning_run_end OUT RECORD; fi
# tuning_run_begin succeeds when OUT must be trained: not finished, or finished from other inputs (it says
# which changed). A finished run of other inputs, or an interrupted one of other inputs, is kept as
# OUT.superseded.<time>, so no finished work is lost; an interrupted run of the same inputs (its .started
# holds RECORD) stays in place for the trainer to resume. It fails, touching nothing, when OUT's .done
# holds RECORD: the caller only reports it again.
tuning_run_begin() {
  local out=$1 record=$2 name=$3
  if [ -f "${out}/.done" ] && [ "$(cat "${out}/.done")" = "${record}" ]; then
    return 1
  fi
  if [ -f "${out}/.done" ]; then
    echo "$0: ${name}: inputs changed ($(record_diff "${out}/.done" "${record}")); training again" >&2
  fi
  if [ -e "${out}" ] && { [ -f "${out}/.done" ] || [ "$(cat "${out}/.started" 2>/dev/null)" != "${record}" ]; }; then
    move_aside "${out}" "${out}.superseded.$(date +%s)" > /dev/null
  fi
  mkdir -p "${out}"
  printf '%s\n' "${record}" > "${out}/.started"
}

# tuning_run_end OUT RECORD: OUT is finished from RECORD's inputs.
tuning_run_end() {
  printf '%s\n' "$2" > "$1/.done"
  rm -f "$1/.started"
}
