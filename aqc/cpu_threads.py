"""How many intra-op threads a training or decoding process uses, re-decided while it runs.

PyTorch's CPU kernels run on OpenMP threads that spin-wait for each other between parallel regions. When
another process holds one of the cores a thread was counting on, every region waits for a thread that is
not running: on 2 cores, a 2-thread training beside one busy process ran 10.8x slower (issue 20), where a
1-thread one lost 3 %. A fixed thread count is right either for an idle machine or for a shared one, never
for both, and shared machines change from minute to minute.

The policy (:class:`ThreadGovernor`):

* ceiling: the cores this process may use (``os.sched_getaffinity``; a cgroup CPU quota, when smaller),
  or ``OMP_NUM_THREADS`` when that is set and smaller;
* every ``interval`` seconds (default 2, at a step boundary), the CPU time that *other* processes used on
  those cores over the window is read from ``/proc/stat`` minus this process's own (``/proc/self/stat``);
  data-loader workers are other processes and count as such. The thread count becomes the ceiling minus
  the cores in use by others, rounded, at least 1: the full count on an idle machine, one thread less per
  busy core beside it. Two aqc trainings on one machine settle on a share each;
* ``AQC_NUM_THREADS=N`` (or ``--num_threads N`` in the entry points) fixes the count and turns the
  re-deciding off; ``AQC_NUM_THREADS=auto`` is the default. Where ``/proc`` is missing (not Linux) the
  count is the ceiling, fixed.

Entry points call :func:`apply` once at start; :func:`install_training_hook` re-decides after each
optimizer step (every optimizer of the process, ESPnet's trainers included), and decoders call
:meth:`ThreadGovernor.tick` between utterances. Only the calling thread's OpenMP setting changes, so these
calls happen on the thread that runs the model.

Other thread pools in the process get one thread (:func:`limit_library_blas`, from :func:`apply`): numpy's
OpenBLAS, whose idle threads spin on the model's cores after each of the augmentation's vector ops
(0.229 -> 0.151 s per egs/asterisk pre-training update, bit-identical).

A different thread count sums in a different order: two trainings with the same config and seed, one on
1 thread and one on 2, drift apart (2.4e-7 in the weights after 40 updates; fine-tuned from, 25 points of
CER apart in egs/asterisk). So the trainings report, per epoch, the mean thread count their updates ran
with (the stat ``intra_op_threads``: :func:`take_epoch_threads`), and ``aqc.results`` says per system
whether a run can be repeated bit for bit (one count throughout) or not (the count moved).
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

ENV = "AQC_NUM_THREADS"


def allowed_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2/v1 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota() -> Optional[float]:
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            limit, period = f.read().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as f:
            limit = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as f:
            period = int(f.read())
        return None if limit <= 0 else limit / period
    except (OSError, ValueError):
        return None


def ceiling() -> int:
    """The most threads the policy uses: allowed cores, or ``OMP_NUM_THREADS`` when set and smaller."""
    cores = allowed_cores()
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return cores


def fixed_threads(value: Optional[str] = None) -> Optional[int]:
    """The count ``AQC_NUM_THREADS`` (or ``value``) fixes; None for ``auto``/unset. A bad value is an error."""
    value = (os.environ.get(ENV, "") if value is None else str(value)).strip().lower()
    if value in ("", "auto"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ENV}={value!r}: expected auto or a number of threads >= 1")
    return int(value)


class CpuMeter:
    """CPU time used on a set of cores by other processes, from ``/proc/stat`` and ``/proc/self/stat``."""

    def __init__(self, cores: Optional[List[int]] = None):
        try:
            self.cores = sorted(os.sched_getaffinity(0)) if cores is None else list(cores)
        except (AttributeError, OSError):
            self.cores = []
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._read()

    @property
    def available(self) -> bool:
        return self.last is not None

    def _read(self) -> Optional[Tuple[float, float, float]]:
        """(busy seconds on our cores, all seconds on our cores, this process's CPU seconds)."""
        try:
            wanted = {f"cpu{i}" for i in self.cores}
            busy = total = 0.0
            with open("/proc/stat", encoding="ascii") as f:
                for line in f:
                    fields = line.split()
                    if not fields or fields[0] not in wanted:
                        continue
                    values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
                    idle = values[3] + values[4]
                    busy += sum(values) - idle
                    total += sum(values)
            with open("/proc/self/stat", encoding="ascii") as f:
                own_fields = f.read().rsplit(")", 1)[1].split()
            own = float(own_fields[11]) + float(own_fields[12])  # utime, stime (all threads)
        except (OSError, ValueError, IndexError):
            return None
        if total <= 0:
            return None
        return busy / self.ticks, total / self.ticks, own / self.ticks

    def others_busy(self) -> Optional[float]:
        """Cores' worth of CPU that other processes used since the previous call (None if unknown)."""
        now = self._read()
        if now is None or self.last is None:
            self.last = now
            return None
        busy, total, own = (a - b for a, b in zip(now, self.last))
        self.last = now
        if total <= 0:
            return None
        seconds = total / max(len(self.cores), 1)  # wall time of the window
        return max(0.0, (busy - own) / seconds)


class ThreadGovernor:
    """Sets ``torch.set_num_threads`` from the policy (module docstring); :meth:`tick` re-decides."""

    def __init__(self, fixed: Optional[int] = None, interval: float = 2.0,
                 set_threads: Optional[Callable[[int], None]] = None, meter: Optional[CpuMeter] = None):
        import torch

        self.fixed = fixed
        self.interval = float(interval)
        self.ceiling = ceiling()
        self.set_threads = set_threads or torch.set_num_threads
        self.meter = None if fixed is not None else (meter or CpuMeter())
        self.adaptive = self.meter is not None and self.meter.available
        self.threads = 0
        self.changes = 0
        self.next_check = 0.0
        self.steps: Counter = Counter()  # optimizer steps per thread count since take_steps()

    def choose(self, others: Optional[float]) -> int:
        if self.fixed is not None:
            return self.fixed
        if others is None:
            return self.ceiling
        return max(1, min(self.ceiling, int(math.floor(self.ceiling - others + 0.5))))

    def start(self, settle: float = 0.2) -> int:
        """The first decision: the ceiling (or the fixed count), minus what others use over ``settle`` s."""
        others = None
        if self.adaptive:
            time.sleep(settle)
            others = self.meter.others_busy()
        self._set(self.choose(others), others)
        self.next_check = time.monotonic() + self.interval
        return self.threads

    def tick(self) -> int:
        """Re-decide if ``interval`` seconds have passed (cheap otherwise)."""
        if not self.adaptive:
            return self.threads
        now = time.monotonic()
        if now < self.next_check:
            return self.threads
        self.next_check = now + self.interval
        others = self.meter.others_busy()
        self._set(self.choose(others), others)
        return self.threads

    def step_done(self) -> int:
        """After an optimizer step: count it under the thread count it ran with, then :meth:`tick`."""
        self.steps[self.threads] += 1
        return self.tick()

    def take_steps(self) -> Dict[int, int]:
        """Optimizer steps per thread count since the previous call (an epoch's, for its report)."""
        steps, self.steps = dict(self.steps), Counter()
        return steps

    def _set(self, threads: int, others: Optional[float]) -> None:
        if threads == self.threads:
            return
        if self.threads:
            self.changes += 1
            logger.debug(f"intra-op threads {self.threads} -> {threads} (other processes use "
                         f"{others if others is not None else float('nan'):.2f} of {self.ceiling} core(s))")
        self.threads = threads
        self.set_threads(threads)

    def describe(self) -> str:
        if self.fixed is not None:
            return f"intra-op threads: {self.fixed}, fixed ({ENV})"
        if not self.adaptive:
            return f"intra-op threads: {self.threads} (the cores this process may use; no /proc to watch)"
        return (f"intra-op threads: {self.threads} of at most {self.ceiling}, re-decided every "
                f"{self.interval:g} s from the CPU other processes use ({ENV}=N fixes it)")


BLAS_ENV = "OPENBLAS_NUM_THREADS"


def limit_library_blas() -> List[str]:
    """One thread for each OpenBLAS or BLIS pool loaded in this process that is not PyTorch's own (numpy's,
    scipy's); returns a line per pool changed, for the log.

    numpy's OpenBLAS wakes its threads for any vector op over 10,000 elements (the augmentation's signal
    power: ``np.dot`` over an utterance, several per update), and they then spin for about 0.1 s waiting
    for more work, on the very cores PyTorch's OpenMP threads run the model on. In egs/asterisk's
    pre-training (data loading and augmentation in the training process) that cost 0.229 s per update
    against 0.151 s with the pool at one thread: the CNN's forward took 73 ms instead of 23 ms, and the
    checkpoint after 150 updates was byte-identical (bench/README.md, "numpy's BLAS threads"). numpy's
    BLAS does only such vector ops in our processes; a second thread buys them nothing.

    MKL is left alone: where PyTorch links it dynamically it is PyTorch's own pool, which
    ``torch.set_num_threads`` sets. A user's ``OPENBLAS_NUM_THREADS`` stays in force. Otherwise it is set
    to 1 in the environment too, so that an OpenBLAS loaded later (scipy's) and a data-loader worker
    started by ``spawn`` begin with one thread.
    """
    if os.environ.get(BLAS_ENV):
        return []
    os.environ[BLAS_ENV] = "1"
    try:
        pools = library_blas_pools()
    except ImportError:  # a declared dependency; without it numpy's pool keeps its threads
        logger.warning("threadpoolctl is not installed: numpy's BLAS threads are left as they are (pip install "
                       "threadpoolctl)")
        return []
    changed = []
    for pool in pools:
        if pool.num_threads <= 1:
            continue
        before = pool.num_threads
        pool.set_num_threads(1)
        changed.append(f"{pool.internal_api} ({os.path.basename(pool.filepath)}): {before} -> 1 thread")
    return changed


def library_blas_pools() -> list:
    """threadpoolctl's controllers of the OpenBLAS and BLIS pools loaded in this process outside PyTorch's
    folder (numpy's, scipy's). A pool inside it is PyTorch's own BLAS (some builds ship OpenBLAS): its
    threads run the model. ImportError without threadpoolctl."""
    from threadpoolctl import ThreadpoolController
    import torch

    torch_dir = os.path.dirname(os.path.realpath(torch.__file__)) + os.sep
    return [pool for pool in ThreadpoolController().lib_controllers
            if pool.internal_api in ("openblas", "blis") and not os.path.realpath(pool.filepath).startswith(torch_dir)]


_GOVERNOR: Optional[ThreadGovernor] = None


def apply(num_threads: Optional[str] = None) -> ThreadGovernor:
    """Start this process's governor (once; later calls return it). ``num_threads``: ``auto`` or N,
    overriding ``AQC_NUM_THREADS``."""
    global _GOVERNOR
    if _GOVERNOR is None:
        _start_blas_limit()
        _GOVERNOR = ThreadGovernor(fixed=fixed_threads(num_threads))
        _GOVERNOR.start()
    return _GOVERNOR


def _start_blas_limit() -> None:
    for line in limit_library_blas():
        logger.info(f"a BLAS pool outside PyTorch (numpy's, scipy's), whose idle threads would spin on the "
                    f"model's cores: {line} ({BLAS_ENV}=N keeps N)")


def fix(threads: int) -> ThreadGovernor:
    """Fix this process's count from now on, whatever ``apply`` is asked later (a test session that compares
    runs bit for bit, an embedding application with its own policy)."""
    global _GOVERNOR
    _start_blas_limit()
    _GOVERNOR = ThreadGovernor(fixed=int(threads))
    _GOVERNOR.start()
    return _GOVERNOR


def install_training_hook() -> None:
    """Re-decide after every optimizer step of this process (all optimizers; ESPnet's trainers too)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    if getattr(install_training_hook, "installed", False):
        return
    register_optimizer_step_post_hook(lambda optimizer, args, kwargs: _GOVERNOR and _GOVERNOR.step_done())
    install_training_hook.installed = True


def take_epoch_threads() -> Optional[float]:
    """The mean thread count of this process's optimizer steps since the previous call (None: no step, or no
    governor). A whole number when every step ran with one count; a fraction when the count moved."""
    if _GOVERNOR is None:
        return None
    steps = _GOVERNOR.take_steps()
    total = sum(steps.values())
    return sum(threads * n for threads, n in steps.items()) / total if total else None


def add_argument(parser) -> None:
    """``--num_threads`` for an entry point's parser."""
    parser.add_argument("--num_threads", default=None,
                        help=f"Intra-op threads per process: auto (default; or {ENV}) follows the cores other "
                             "processes leave free, re-decided every 2 s; N fixes it (aqc.cpu_threads)")


def start_for_training(num_threads: Optional[str] = None) -> ThreadGovernor:
    """:func:`apply`, the optimizer-step hook, and one line for the log."""
    governor_ = apply(num_threads)
    install_training_hook()
    logging.info(governor_.describe())
    return governor_
