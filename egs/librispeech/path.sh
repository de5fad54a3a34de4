# Sourced by run.sh: the aqc environment and the repository's utils/ on PATH.
AQC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck disable=SC1091
. "${AQC_ROOT}/tools/activate_python.sh"
export PATH=${AQC_ROOT}/utils:${PATH}
export PYTHONUNBUFFERED=1
# Threads: each aqc entry point chooses its own from the cores other processes leave free, and re-decides
# while it runs (aqc/cpu_threads.py); AQC_NUM_THREADS=N fixes the count, OMP_NUM_THREADS caps it.
