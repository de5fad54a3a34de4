#!/usr/bin/env bash
# Create the aqc virtual environment (tools/venv) and install the pinned, known-good package set.
#
# Usage: bash tools/install.sh [options]
#   --venv DIR               where the environment lives (default: tools/venv)
#   --python EXE             interpreter that creates it (default: python3; needs >= 3.10)
#   --torch_spec "SPECS"     torch build to install instead of tools/requirements/torch.txt,
#                            e.g. "torch==2.9.1 torchaudio==2.9.1"
#   --torch_index_url URL    extra index for the torch build, e.g. https://download.pytorch.org/whl/cu126
#   --with_test true|false   also install the test extra (pytest, transformers) (default: true)
#   --force true|false       reinstall even when nothing changed (default: false)
#
# The pins live in tools/requirements/*.txt. A second run with the same pins only re-verifies.
set -euo pipefail

tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "${tools_dir}")
venv=${tools_dir}/venv
python=python3
torch_spec=
torch_index_url=
with_test=true
force=false

# shellcheck source=../utils/log.sh
. "${root}/utils/log.sh"
# shellcheck source=../utils/parse_options.sh
. "${root}/utils/parse_options.sh"

req=${tools_dir}/requirements
[ -n "${torch_spec}" ] || torch_spec=$(grep -v '^\s*#' "${req}/torch.txt" | xargs)

"${python}" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { log "ERROR: ${python} is older than Python 3.10; pass --python /path/to/python3.10+"; exit 1; }

# Everything that decides what gets installed; a change to any of it triggers a reinstall.
stamp_text=$(cat "${req}"/*.txt "${BASH_SOURCE[0]}" "${root}/setup.py"; \
             echo "${torch_spec} ${torch_index_url} ${with_test} $("${python}" -V 2>&1)")
stamp_hash=$(printf '%s' "${stamp_text}" | sha256sum | cut -d' ' -f1)
stamp_file=${venv}/.aqc-install-stamp

verify() {
  log "Verifying ${venv}"
  "${venv}/bin/python" - <<'PY'
import importlib, time
t0 = time.time()
for name in ["torch", "torchaudio", "soundfile", "kaldiio", "sentencepiece", "fast_pytorch_kmeans",
             "pedalboard", "espnet2.tasks.ssl", "espnet2.tasks.asr", "aqc"]:
    importlib.import_module(name)
from aqc.compat import import_torchaudio_augmentations
taa = import_torchaudio_augmentations()
import torch, torchaudio
assert torch.isfinite(taa.Noise(0.1, 0.1)(torch.ones(1, 100) + torch.randn(1, 100))).all()
print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, cuda={torch.cuda.is_available()}, "
      f"imports took {time.time() - t0:.1f}s")
PY
}

if [ "${force}" = false ] && [ -f "${stamp_file}" ] && [ "$(cat "${stamp_file}")" = "${stamp_hash}" ]; then
  log "Nothing changed since the last install (${stamp_file}); re-verifying only"
  verify
  exit 0
fi

if [ ! -x "${venv}/bin/python" ]; then
  log "Creating ${venv}"
  "${python}" -m venv "${venv}"
fi
pip=("${venv}/bin/python" -m pip --disable-pip-version-check -q)
rm -f "${stamp_file}"

log "Build tools"
"${pip[@]}" install -r "${req}/build.txt"
log "torch: ${torch_spec}"
# shellcheck disable=SC2086
"${pip[@]}" install ${torch_index_url:+--extra-index-url "${torch_index_url}"} ${torch_spec}
# Later steps must keep exactly this torch: pip would otherwise "upgrade" it for some dependency.
"${venv}/bin/python" -m pip freeze | grep -iE '^(torch|torchaudio)==' > "${venv}/torch-constraints.txt"
log "espnet requirements and aqc requirements"
"${pip[@]}" install -c "${venv}/torch-constraints.txt" -r "${req}/espnet.txt" -r "${req}/aqc.txt"
log "Packages installed without their declared dependencies"
"${pip[@]}" install --no-deps -r "${req}/nodeps.txt"
if [ "${with_test}" = true ]; then
  log "Test extra"
  "${pip[@]}" install -c "${venv}/torch-constraints.txt" -r "${req}/test.txt"
  "${pip[@]}" install --no-deps -r "${req}/test_nodeps.txt"
fi
log "aqc (editable)"
"${pip[@]}" install --no-deps --no-build-isolation -e "${root}"

verify
echo "${stamp_hash}" > "${stamp_file}"
log "Done. Activate with: . tools/activate_python.sh"
