"""Recent frames by stamp: the refiner node matches each detections message to the image it was made
from (detection runs slower than the camera, so the image has moved on)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class FrameCache(Generic[T]):
    """Keeps the last ``capacity`` items by stamp [s]; ``match`` finds the one within ``slop`` seconds."""

    def __init__(self, capacity: int = 30) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items: OrderedDict[float, T] = OrderedDict()
        self.out_of_order = 0

    def add(self, stamp: float, item: T) -> bool:
        """Store; returns False (and counts it) when ``stamp`` is older than the newest kept item."""
        if self._items and stamp < next(reversed(self._items)):
            self.out_of_order += 1
            return False
        self._items[stamp] = item
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return True

    def match(self, stamp: float, slop: float = 1e-6) -> T | None:
        best, best_dt = None, slop
        for s, item in self._items.items():
            dt = abs(s - stamp)
            if dt <= best_dt:
                best, best_dt = item, dt
        return best

    def __len__(self) -> int:
        return len(self._items)
