"""Shared helpers of the benchmarks: median wall time and peak extra resident memory of a call."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import time
from collections.abc import Callable
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _status_bytes(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_memory(fn: Callable[[], object]) -> float | None:
    """Peak resident memory [bytes] that one call of ``fn`` adds on top of what the process held before.

    Linux only: resets the high-water mark through /proc/self/clear_refs (``5``) and reads VmHWM after
    the call. Memory freed earlier in the process and reused by the call is not seen: use
    ``peak_memory_fresh`` for numbers to compare. Returns None where /proc is not available.
    """
    try:
        _CLEAR_REFS.write_text("5")
        before = _status_bytes("VmRSS")
        fn()
        return max(0, _status_bytes("VmHWM") - before)
    except OSError:
        return None


def fmt_mib(nbytes: float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.1f}"


def _measure_in_child(module_file: str, factory: str, args: tuple) -> float | None:
    spec = importlib.util.spec_from_file_location("bench_case", module_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = getattr(mod, factory)(*args)  # builds the inputs, returns the call to measure
    return peak_memory(fn)


def peak_memory_fresh(module_file: str, factory: str, *args) -> float | None:
    """``peak_memory`` of ``module.factory(*args)()`` in a freshly spawned process, so no freed heap of
    earlier work hides the call's allocations: comparable numbers for kernel vs reference."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure_in_child, (module_file, factory, args))
