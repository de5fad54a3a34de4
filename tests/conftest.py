"""Settings of the test process."""
import os

import torch

from aqc import cpu_threads

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N (pytest.ini): the workers share the machine's cores. Two processes that each spin an
    # OpenMP pool over the same cores slow each other several times over, so each worker, and every
    # subprocess a test starts from it, runs on one thread.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# Runs inside this process are compared bit for bit (--resume, averaged checkpoints): the thread count must
# not follow the machine's load, as it does by default (aqc.cpu_threads). Subprocesses keep the default
# policy, under the one-thread cap above when the suite runs on workers.
cpu_threads.fix(torch.get_num_threads())


def pytest_collection_modifyitems(items):
    """The slow end-to-end tests first: with workers, the longest ones start at once instead of ending the
    run alone. The order is the same in every worker, as pytest-xdist requires."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
