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


BLAS_PROBE = """
import json, os, sys
import numpy, torch
from threadpoolctl import ThreadpoolController
def pools():
    return {c.internal_api: c.num_threads for c in ThreadpoolController().lib_controllers}
before = pools()
import logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from aqc import cpu_threads
cpu_threads.apply()
print(json.dumps({"before": before, "after": pools(), "env": os.environ.get("OPENBLAS_NUM_THREADS"),
                  "torch": torch.get_num_threads()}))
"""


def _blas_probe(**env):
    child_env = {k: v for k, v in os.environ.items()
                 if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS", "AQC_NUM_THREADS")}
    child_env.update(AQC_NUM_THREADS="2", **env)
    out = subprocess.run([sys.executable, "-c", BLAS_PROBE], env=child_env, capture_output=True, text=True,
                         check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_numpy_blas_pool_runs_one_thread_beside_the_model():
    """numpy's OpenBLAS threads spin after each vector op on the cores the model needs (bench_blas_threads)."""
    report, log = _blas_probe()
    if report["before"].get("openblas", 1) < 2:
        pytest.skip("numpy's OpenBLAS starts with one thread here (one core, or no OpenBLAS)")
    assert report["after"]["openblas"] == 1
    assert report["after"]["openmp"] == report["before"]["openmp"]  # PyTorch's own pool is not touched
    assert report["torch"] == 2 and report["env"] == "1"  # children and later-loaded OpenBLAS start at 1
    assert "a BLAS pool outside PyTorch" in log and f"{report['before']['openblas']} -> 1 thread" in log


def test_a_users_openblas_num_threads_is_kept():
    report, log = _blas_probe(OPENBLAS_NUM_THREADS="2")
    assert report["after"]["openblas"] == report["before"]["openblas"] == 2 and report["env"] == "2"
    assert "-> 1 thread" not in log


class FakePool:
    def __init__(self, internal_api, filepath, num_threads):
        self.internal_api, self.filepath, self.num_threads = internal_api, filepath, num_threads

    def set_num_threads(self, n):
        self.num_threads = n


def test_only_blas_pools_outside_pytorch_are_limited(monkeypatch, tmp_path):
    import threadpoolctl

    torch_lib = os.path.join(os.path.dirname(os.path.realpath(torch.__file__)), "lib", "libopenblas.so")
    pools = [FakePool("openblas", str(tmp_path / "numpy.libs" / "libscipy_openblas64_.so"), 4),
             FakePool("openblas", torch_lib, 4),  # a PyTorch build that ships OpenBLAS: its model threads
             FakePool("blis", str(tmp_path / "libblis.so"), 3),
             FakePool("mkl", str(tmp_path / "libmkl_rt.so"), 4),  # PyTorch's, where it links MKL dynamically
             FakePool("openmp", str(tmp_path / "libgomp.so"), 4),
             FakePool("openblas", str(tmp_path / "scipy.libs" / "libscipy_openblas.so"), 1)]
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", lambda: type("C", (), {"lib_controllers": pools})())
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "restored after the test")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    changed = cpu_threads.limit_library_blas()
    assert [p.num_threads for p in pools] == [1, 4, 1, 4, 4, 1]
    assert changed == ["openblas (libscipy_openblas64_.so): 4 -> 1 thread", "blis (libblis.so): 3 -> 1 thread"]
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    pools[0].num_threads = 4
    assert cpu_threads.limit_library_blas() == [] and pools[0].num_threads == 4  # the variable is now set
