"""Counters the nodes publish as diagnostic_msgs: frame rate, latency, drops and skipped frames by reason."""

from __future__ import annotations

import time
from collections import Counter, deque


class NodeStats:
    def __init__(self, window: int = 50) -> None:
        self.latencies: deque[float] = deque(maxlen=window)
        self.stamps: deque[float] = deque(maxlen=window)
        self.processed = 0
        self.skipped: Counter = Counter()
        self.dropped = 0

    def frame_done(self, latency: float, now: float | None = None) -> None:
        self.processed += 1
        self.latencies.append(latency)
        self.stamps.append(time.monotonic() if now is None else now)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    def rate(self) -> float:
        if len(self.stamps) < 2:
            return 0.0
        span = self.stamps[-1] - self.stamps[0]
        return (len(self.stamps) - 1) / span if span > 0 else 0.0

    def values(self) -> dict[str, str]:
        """Key/value strings for a DiagnosticStatus."""
        lat = sorted(self.latencies)
        out = {"frames processed": str(self.processed), "frame rate [Hz]": f"{self.rate():.2f}",
               "latency mean [ms]": f"{1000 * sum(lat) / len(lat):.1f}" if lat else "n/a",
               "latency p95 [ms]": f"{1000 * lat[int(0.95 * (len(lat) - 1))]:.1f}" if lat else "n/a",
               "frames dropped (busy)": str(self.dropped), "frames skipped": str(sum(self.skipped.values()))}
        for reason, n in self.skipped.most_common(5):
            out[f"skipped: {reason[:60]}"] = str(n)
        return out

    def level(self) -> int:
        """0 OK, 1 WARN (skipped frames), as diagnostic_msgs/DiagnosticStatus levels."""
        return 1 if self.skipped else 0
