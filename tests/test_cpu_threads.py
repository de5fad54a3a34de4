"""The intra-op thread policy (issue 20): the choice, the override, the CPU meter, the hooks."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from aqc import cpu_threads
from aqc.cpu_threads import CpuMeter, ThreadGovernor, fixed_threads

linux = pytest.mark.skipif(not CpuMeter().available, reason="no /proc/stat to read")


class ScriptedMeter:
    """Reports the given loads of other processes, one per call."""

    available = True

    def __init__(self, loads):
        self.loads = list(loads)

    def others_busy(self):
        return self.loads.pop(0)


def test_threads_follow_the_cores_other_processes_leave(monkeypatch):
    monkeypatch.setattr(cpu_threads, "ceiling", lambda: 4)
    chosen = []
    governor = ThreadGovernor(interval=0.0, set_threads=chosen.append,
                              meter=ScriptedMeter([0.0, 1.0, 1.6, 2.4, 9.0, None, 0.3]))
    assert governor.start(settle=0.0) == 4
    assert [governor.tick() for _ in range(6)] == [3, 2, 2, 1, 4, 4]  # None: unknown, the ceiling
    assert chosen == [4, 3, 2, 1, 4]  # set only when it changes
    assert governor.changes == 4


def test_a_fixed_count_is_kept_and_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("AQC_NUM_THREADS", "3")
    assert fixed_threads() == 3
    assert fixed_threads("auto") is None and fixed_threads("2") == 2
    chosen = []
    governor = ThreadGovernor(fixed=fixed_threads(), interval=0.0, set_threads=chosen.append)
    governor.start()
    governor.tick()
    assert chosen == [3] and not governor.adaptive and "fixed (AQC_NUM_THREADS)" in governor.describe()
    for bad in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="expected auto or a number"):
            fixed_threads(bad)


def test_omp_num_threads_caps_the_ceiling(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert cpu_threads.ceiling() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "512")
    assert cpu_threads.ceiling() == cpu_threads.allowed_cores()


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@linux
def test_meter_counts_other_processes_not_this_one():
    # Measured against what the rest of the machine does meanwhile: the suite's other workers (pytest.ini)
    # and CI's other jobs, whose load can change between two windows. So each comparison gets three tries;
    # a meter that counted this process, or missed another, fails every one.
    def own_spin_not_counted() -> bool:
        meter = CpuMeter()
        time.sleep(0.6)
        background = meter.others_busy()
        _spin(0.6)  # this process busy: not "others"
        return meter.others_busy() < background + 0.4

    def busy_process_counted() -> bool:
        meter = CpuMeter()
        time.sleep(0.6)
        background = meter.others_busy()
        if background > (os.cpu_count() or 1) - 0.6:
            # every core already busy with other work: one more busy process cannot raise the count by 0.4
            pytest.skip(f"the machine is saturated ({background:.1f} of {os.cpu_count()} cores busy elsewhere)")
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.3)
            meter.others_busy()
            time.sleep(1.0)
            return meter.others_busy() > background + 0.4  # about one core's worth on an idle machine
        finally:
            busy.kill()
            busy.wait()

    assert any(own_spin_not_counted() for _ in range(3))
    assert any(busy_process_counted() for _ in range(3))


def test_training_hook_re_decides_after_optimizer_steps(monkeypatch):
    ticks = []

    class Counting:
        def step_done(self):
            ticks.append(1)

    monkeypatch.setattr(cpu_threads, "_GOVERNOR", Counting())
    cpu_threads.install_training_hook()
    cpu_threads.install_training_hook()  # once only
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    for _ in range(3):
        weight.sum().backward()
        optimizer.step()
    assert len(ticks) == 3


def test_each_epoch_reports_the_mean_thread_count_of_its_optimizer_steps(monkeypatch):
    monkeypatch.setattr(cpu_threads, "ceiling", lambda: 2)
    chosen = []
    governor = ThreadGovernor(interval=0.0, set_threads=chosen.append, meter=ScriptedMeter([0.0, 0.0, 1.0, 1.0, 0.0, 0.0]))
    monkeypatch.setattr(cpu_threads, "_GOVERNOR", governor)
    governor.start(settle=0.0)
    assert cpu_threads.take_epoch_threads() is None  # no step yet
    for _ in range(4):  # steps on 2, 2, 1, 1 threads (each step re-decides for the next)
        governor.step_done()
    assert chosen == [2, 1, 2]
    assert cpu_threads.take_epoch_threads() == 1.5
    governor.step_done()  # the next epoch starts from nothing: one step on 2 threads
    assert cpu_threads.take_epoch_threads() == 2.0
    fixed = ThreadGovernor(fixed=3, set_threads=lambda n: None)
    monkeypatch.setattr(cpu_threads, "_GOVERNOR", fixed)
    fixed.start()
    for _ in range(5):
        fixed.step_done()
    assert cpu_threads.take_epoch_threads() == 3.0
    monkeypatch.setattr(cpu_threads, "_GOVERNOR", None)
    assert cpu_threads.take_epoch_threads() is None
