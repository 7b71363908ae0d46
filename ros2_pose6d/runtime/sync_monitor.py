"""Notices images that never find their camera_info (the synchroniser silently drops them), so the
node can warn and count them as skipped frames."""

from __future__ import annotations

import threading


class SyncMonitor:
    """``image()`` for every image received, ``paired()`` for every synchronised pair; ``check()`` returns
    how many images have newly gone unpaired, allowing ``pending`` of them to still be waiting."""

    def __init__(self, pending: int = 10) -> None:
        self.pending = pending
        self.images = self.pairs = self.unpaired = 0
        self._lock = threading.Lock()

    def image(self, *_msg) -> None:
        with self._lock:
            self.images += 1

    def paired(self) -> None:
        with self._lock:
            self.pairs += 1

    def check(self) -> int:
        with self._lock:
            new = self.images - self.pairs - self.unpaired - self.pending
            if new <= 0:
                return 0
            self.unpaired += new
            return new
