"""aqc.espnet.typeguard_cache: ESPnet's @typechecked functions read from a disk cache, with the same checks."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typeguard
import typeguard._decorators as decorators

from aqc.espnet import typeguard_cache

MODULE = '''
from typing import List
from typeguard import typechecked


@typechecked
def scale(values: List[float], factor: float = 2.0) -> List[float]:
    return [v * factor for v in values]


@typechecked
class Counter:
    def __init__(self, start: int):
        self.count = start

    def add(self, step: int) -> int:
        self.count += step
        return self.count

    @classmethod
    def named(cls, name: str) -> "Counter":
        return cls(len(name))


def make_checker():
    class Local:
        pass

    @typechecked
    def check(item: Local) -> Local:  # annotates a local class: typeguard reads it from this frame
        return item

    return Local, check
'''


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(typeguard_cache.ENV, str(folder))
    monkeypatch.setattr(decorators, "instrument", typeguard_cache.instrument)
    return folder


def _import(tmp_path: Path, name: str, source: str = MODULE):
    folder = tmp_path / "modules"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    try:
        importlib.invalidate_caches()
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def _check_all(module):
    assert module.scale([1.0, 2.5]) == [2.0, 5.0]
    with pytest.raises(typeguard.TypeCheckError):
        module.scale(["a"])
    counter = module.Counter(1)
    assert counter.add(2) == 3
    with pytest.raises(typeguard.TypeCheckError):
        counter.add("2")
    with pytest.raises(typeguard.TypeCheckError):
        module.Counter("1")
    assert module.Counter.named("abc").count == 3
    with pytest.raises(typeguard.TypeCheckError):
        module.Counter.named(3)
    local, check = module.make_checker()
    item = local()
    assert check(item) is item
    with pytest.raises(typeguard.TypeCheckError):
        check(object())


def test_the_checks_hold_from_a_cold_and_a_warm_cache(cache, tmp_path, monkeypatch):
    _check_all(_import(tmp_path, "cold_module"))
    entries = sorted(cache.glob("*.bin"))
    assert len(entries) == 5  # scale, __init__, add, named, check
    stamps = [p.stat().st_mtime_ns for p in entries]

    def never(*args):
        raise AssertionError("instrumented again although the cache holds it")

    monkeypatch.setattr(typeguard_cache, "_instrumented_code", never)
    _check_all(_import(tmp_path, "cold_module"))  # same file, imported again: every function from the cache
    assert [p.stat().st_mtime_ns for p in sorted(cache.glob("*.bin"))] == stamps


def test_the_code_is_what_typeguard_compiles(cache, tmp_path):
    """Each function's code from the cache equals the code typeguard's own instrument makes."""
    cached = _import(tmp_path, "compared")
    cached_codes = [cached.scale.__code__, cached.Counter.add.__code__, cached.Counter.named.__func__.__code__]
    cached = _import(tmp_path, "compared")  # now read back from the files
    assert [cached.scale.__code__, cached.Counter.add.__code__,
            cached.Counter.named.__func__.__code__] == cached_codes
    decorators.instrument = typeguard_cache._ORIGINAL
    plain = _import(tmp_path, "compared")
    assert [plain.scale.__code__, plain.Counter.add.__code__, plain.Counter.named.__func__.__code__] == cached_codes
    assert cached.scale.__code__ is not plain.scale.__code__


def test_an_edited_module_is_instrumented_afresh(cache, tmp_path):
    assert _import(tmp_path, "edited").scale([1.0]) == [2.0]
    edited = MODULE.replace("factor: float = 2.0", "factor: float = 3.0").replace("List[float]:", "List[int]:")
    module = _import(tmp_path, "edited", edited)
    assert module.scale([1], 3) == [3]
    with pytest.raises(typeguard.TypeCheckError):
        module.scale([1.5])  # the new annotation is checked, not the cached one
    assert len(list(cache.glob("*.bin"))) == 8  # 4 functions twice (the local one is never made here)


def test_a_damaged_entry_is_rebuilt(cache, tmp_path):
    _import(tmp_path, "damaged")
    for entry in cache.glob("*.bin"):
        entry.write_bytes(b"\x00garbage")
    _check_all(_import(tmp_path, "damaged"))
    assert all(entry.stat().st_size > 100 for entry in cache.glob("*.bin"))


def test_a_folder_that_cannot_be_written_costs_only_time(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(typeguard_cache.ENV, str(blocked / "cache"))
    monkeypatch.setattr(decorators, "instrument", typeguard_cache.instrument)
    _check_all(_import(tmp_path, "unwritable"))


def test_a_folder_others_can_write_is_not_read(cache, tmp_path, monkeypatch):
    """Code read from a folder someone else could write to would run as this user: not read, not written."""
    _import(tmp_path, "shared_folder")
    entries = sorted(cache.glob("*.bin"))
    assert len(entries) == 4
    cache.chmod(0o777)
    made = []
    original = typeguard_cache._instrumented_code
    monkeypatch.setattr(typeguard_cache, "_instrumented_code", lambda *a: made.append(a[0].__name__) or original(*a))
    _check_all(_import(tmp_path, "shared_folder"))
    assert sorted(made) == ["__init__", "add", "check", "named", "scale"]  # instrumented afresh, every one
    assert sorted(cache.glob("*.bin")) == entries  # the local function's entry was not written there
    cache.chmod(0o700)
    made.clear()
    _import(tmp_path, "shared_folder")
    assert made == []


def test_turned_off_after_install_instruments_without_the_cache(cache, tmp_path, monkeypatch):
    monkeypatch.setenv(typeguard_cache.ENV, "off")
    _check_all(_import(tmp_path, "turned_off"))
    assert not cache.exists()


def test_off_leaves_typeguard_alone(monkeypatch):
    monkeypatch.setattr(decorators, "instrument", typeguard_cache._ORIGINAL)
    monkeypatch.setenv(typeguard_cache.ENV, "off")
    typeguard_cache.install()
    assert decorators.instrument is typeguard_cache._ORIGINAL
    monkeypatch.setenv(typeguard_cache.ENV, "/some/folder")
    typeguard_cache.install()
    assert decorators.instrument is typeguard_cache.instrument


def test_espnet_checks_types_from_the_cache(tmp_path):
    """A fresh process, twice: importing aqc.espnet first caches ESPnet's instrumented functions, and
    ESPnet's own type checks still refuse a wrong argument when they come from the cache."""
    script = textwrap.dedent("""
        import aqc.espnet, typeguard
        from espnet2.train.reporter import Reporter
        try:
            Reporter()._plot_stats(["loss"], 3)  # key2: str
        except typeguard.TypeCheckError as e:
            print("refused:", e)
    """)
    env = dict(os.environ, **{typeguard_cache.ENV: str(tmp_path / "cache")})
    stamps = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert 'refused: argument "key2" (int) is not an instance of str' in run.stdout, run.stderr[-2000:]
        stamps.append({p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.bin")})
    assert len(stamps[0]) >= 5 and stamps[1] == stamps[0]  # the second process wrote nothing: all read back
