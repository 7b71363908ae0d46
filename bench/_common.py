"""Shared helpers of the benchmarks: median wall time and peak extra resident memory of a call."""

from __future__ import annotations

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
    the call. torch's CPU allocator returns large blocks to the OS, so this sees the call's temporaries
    too. Returns None where /proc is not available.
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
