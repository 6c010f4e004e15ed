"""Dynamic batching: detector calls that arrive together run as one batch.

Callers (request threads, job threads) hand a list of frames to :meth:`Batcher.detect` and
block on a future. One thread owns the detectors (an ultralytics predictor is not
thread-safe): it takes the oldest waiting call, then gathers calls with the same detector
options and the same frame shape (so that each frame is letterboxed exactly as it would be
alone, and the pixels equal the CLI's) until ``max_batch`` frames or ``max_wait`` seconds,
and answers each caller with its own frames' detections. It waits only while other admitted
requests may still join: a lone request is never held back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyroblur.core.detections import Detections

logger = logging.getLogger(__name__)

__all__ = ["Batcher"]


@dataclass
class _Call:
    key: str
    options: Any
    frames: list[np.ndarray]
    future: Future = field(default_factory=Future)

    @property
    def group(self) -> tuple[str, tuple[int, ...]]:
        return self.key, self.frames[0].shape if self.frames else ()


class Batcher:
    """Runs detector calls in batches on one thread.

    Args:
        detector_for: ``(key, options) -> detector`` (the model holder's cache).
        max_batch: most frames per detector call.
        max_wait: seconds the first call of a batch waits for others.
        others_waiting: how many admitted requests are not yet in the queue (the batch
            waits for them only while this is positive).
        on_batch: called with each batch's frame count (metrics).
    """

    def __init__(
        self,
        detector_for: Callable[[str, Any], Callable[[list[np.ndarray]], list[Detections]]],
        *,
        max_batch: int,
        max_wait: float,
        others_waiting: Callable[[], int] = lambda: 0,
        on_batch: Callable[[int], None] = lambda n: None,
    ) -> None:
        self._detector_for = detector_for
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._others = others_waiting
        self._on_batch = on_batch
        self._queue: queue.Queue[_Call | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._stopped = False
        self._lock = threading.Lock()
        self.blocked = 0  # callers waiting on a future
        self._thread.start()

    def depth(self) -> int:
        """Calls waiting for the detector."""
        return self._queue.qsize()

    def detect(self, key: str, options: Any, frames: list[np.ndarray]) -> list[Detections]:
        """Detections for ``frames`` (all of one shape) with the detector for ``key``; blocks."""
        if self._stopped:
            raise RuntimeError("the batcher is stopped")
        if not frames:
            return []
        call = _Call(key, options, list(frames))
        with self._lock:
            self.blocked += 1
        try:
            self._queue.put(call)
            return call.future.result()
        finally:
            with self._lock:
                self.blocked -= 1

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        pending: deque[_Call] = deque()
        while True:
            first = pending.popleft() if pending else self._queue.get()
            if first is None:
                break
            batch, stop = self._gather(first, pending)
            self._run(batch)
            if stop:
                break
        for call in pending:
            call.future.set_exception(RuntimeError("the service is shutting down"))

    def _gather(self, first: _Call, pending: deque[_Call]) -> tuple[list[_Call], bool]:
        batch, n = [first], len(first.frames)
        for call in list(pending):  # calls set aside earlier go first
            if n >= self.max_batch:
                break
            if call.group == first.group and n + len(call.frames) <= self.max_batch:
                pending.remove(call)
                batch.append(call)
                n += len(call.frames)
        deadline = time.monotonic() + self.max_wait
        while n < self.max_batch:
            try:
                call = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or self._others() <= 0:
                    break
                try:
                    call = self._queue.get(timeout=min(left, 0.002))
                except queue.Empty:
                    continue
            if call is None:
                return batch, True
            if call.group == first.group and n + len(call.frames) <= self.max_batch:
                batch.append(call)
                n += len(call.frames)
            else:
                pending.append(call)
        return batch, False

    def _run(self, batch: list[_Call]) -> None:
        frames = [f for call in batch for f in call.frames]
        try:
            detector = self._detector_for(batch[0].key, batch[0].options)
            dets = detector(frames)
            if len(dets) != len(frames):
                raise ValueError(f"detector returned {len(dets)} results for {len(frames)} frames")
        except BaseException as exc:  # noqa: BLE001 - every caller gets the error, the thread lives on
            for call in batch:
                call.future.set_exception(exc)
            return
        self._on_batch(len(frames))
        i = 0
        for call in batch:
            call.future.set_result(dets[i : i + len(call.frames)])
            i += len(call.frames)
