"""Run the model off the subscription callback through a queue of one that drops the oldest pending
item: a slow model never builds a backlog, it always works on the newest frame."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any


class DropOldestWorker:
    """``submit(item)`` hands the newest item to a background thread running ``fn(item)``; an item still
    waiting when a newer one arrives is dropped (``dropped`` counts them). ``on_result(item, result)`` and
    ``on_error(item, exc)`` run on the worker thread; an exception never kills the worker."""

    def __init__(self, fn: Callable[[Any], Any], on_result: Callable[[Any, Any], None],
                 on_error: Callable[[Any, BaseException], None], name: str = "pose6d-worker") -> None:
        self.fn, self.on_result, self.on_error = fn, on_result, on_error
        self._pending: Any = None
        self._has_pending = False
        self._cond = threading.Condition()
        self._stop = False
        self.dropped = 0
        self.processed = 0
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        with self._cond:
            if self._has_pending:
                self.dropped += 1
            self._pending, self._has_pending = item, True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                item, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
            try:
                result = self.fn(item)
            except Exception as exc:
                self._report(self.on_error, item, exc)
            else:
                self._report(self.on_result, item, result)
            with self._cond:
                self._busy = False
                self.processed += 1
                self._cond.notify_all()

    @staticmethod
    def _report(cb, item, value) -> None:
        with contextlib.suppress(Exception):
            cb(item, value)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until nothing is pending or running (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._has_pending and not self._busy, timeout)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)
