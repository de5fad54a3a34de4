# Parse --name value / --name=value command-line options into shell variables of the same name.
#
# Source it after the script has set a default for every option it accepts:
#     nj=4; stage=1
#     . utils/parse_options.sh
# Then `--nj 8`, `--nj=8` and `--stage 3` set those variables; `-` and `_` are the same in names
# (`--stop-stage` sets stop_stage). An option without a default in the script is an error naming it.
# `--help` (or -h) prints the script's header comment (its first block of `#` lines) and exits.
# Positional arguments are left in "$@" from the first one that does not start with `--`,
# or after a bare `--`.

_po_help() {
  # The header comment: the leading block of comment lines after the shebang.
  awk 'NR == 1 && /^#!/ { next } /^#/ { sub(/^# ?/, ""); print; seen = 1; next } seen || NF { exit }' "$0"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      _po_help; exit 0 ;;
    --)
      shift; break ;;
    --*=*)
      _po_given=${1%%=*}; _po_value=${1#*=}; shift ;;
    --*)
      _po_given=$1
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2; exit 1
      fi
      _po_value=$2; shift 2 ;;
    *)
      break ;;
  esac
  _po_name=${_po_given#--}
  _po_name=${_po_name//-/_}
  # Only options the script declared (gave a default) are accepted; exported variables
  # (PATH, HOME, ...) are the environment's, not options.
  _po_flags=
  if [[ ${_po_name} =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && [ -n "${!_po_name+set}" ]; then
    _po_flags=$(declare -p "${_po_name}"); _po_flags=${_po_flags#declare -}; _po_flags=${_po_flags%% *}
  fi
  if [ -z "${_po_flags}" ] || [[ ${_po_flags} == *x* ]]; then
    echo "$0: unknown option ${_po_given} (see $0 --help)" >&2; exit 1
  fi
  printf -v "${_po_name}" '%s' "${_po_value}"
done
unset _po_name _po_given _po_value _po_flags
true
