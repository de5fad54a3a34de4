# Source this file to activate aqc's virtual environment (ESPnet's convention; recipes' path.sh source it).
_aqc_tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
if [ ! -f "${_aqc_tools_dir}/venv/bin/activate" ]; then
  echo "aqc: no environment at ${_aqc_tools_dir}/venv; run: bash ${_aqc_tools_dir}/install.sh" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
. "${_aqc_tools_dir}/venv/bin/activate"
unset _aqc_tools_dir
