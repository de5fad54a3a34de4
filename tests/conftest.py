"""Settings of the test process."""
import torch

from aqc import cpu_threads

# Runs inside this process are compared bit for bit (--resume, averaged checkpoints): the thread count must
# not follow the machine's load, as it does by default (aqc.cpu_threads). Subprocesses keep the default.
cpu_threads.fix(torch.get_num_threads())
