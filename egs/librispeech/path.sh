# Sourced by run.sh: the aqc environment and the repository's utils/ on PATH.
AQC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1091
. "${AQC_ROOT}/tools/activate_python.sh"
export PATH=${AQC_ROOT}/utils:${PATH}
export PYTHONUNBUFFERED=1
# 2 threads per process keeps the default CPU recipes fast without oversubscribing data workers.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
