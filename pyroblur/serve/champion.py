"""Which model serves: the ONE place the service asks the registry (issue #21 moves the
registry to MLflow and swaps :func:`resolve_served_model`'s body, nothing else).

:class:`ModelHolder` polls it every ``reload_s`` seconds; when the champion's file changes
(path or sha256), it builds and warms the new detector before swapping it in, so requests
already batched finish on the old one and none is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroblur.anonymize.detector import Detector

logger = logging.getLogger(__name__)

__all__ = ["ModelHolder", "ServedModel", "resolve_served_model"]


@dataclass(frozen=True)
class ServedModel:
    """The model file that serves and what the registry says about it."""

    weights: Path
    sha256: str
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.record.get("registry", {}).get("champion_id") or self.sha256[:16])


def resolve_served_model(device: str) -> ServedModel:
    """The champion's file for ``device`` (its verified ONNX on a CPU, else its ``.pt``) and
    its record (registry id, promotion gates): the lookup behind
    :func:`~pyroblur.anonymize.models.with_resolved_weights`, which the service then calls with it.

    Raises:
        NoModelError, RegistryError: no usable champion (the message says what to do).
    """
    from pyroblur.anonymize.models import model_record, resolve_weights

    weights = resolve_weights(None, device=device)
    record = model_record(weights)
    return ServedModel(weights=weights, sha256=str(record.get("sha256") or ""), record=record)


class ModelHolder:
    """The current :class:`ServedModel` and a cache of detectors built for it (one per set of
    detector options), swapped together when a promotion moves the champion."""

    def __init__(
        self,
        device: str,
        build: Callable[[Path, Any], Detector],
        resolve: Callable[[str], ServedModel] = resolve_served_model,
        max_detectors: int = 4,
    ) -> None:
        self.device = device
        self._build = build
        self._resolve = resolve
        self._max = max_detectors
        self._lock = threading.Lock()
        self.model: ServedModel | None = None
        self.error: str | None = None
        self._detectors: dict[str, Detector] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0

    def load(self, warm: Any = None) -> bool:
        """Resolve the champion; when it changed, build ``warm``'s detector for it first and
        then swap. Returns True when the model changed. Errors are kept in :attr:`error`
        (``/readyz`` reports them) and the old model keeps serving."""
        try:
            model = self._resolve(self.device)
        except Exception as exc:  # noqa: BLE001 - a broken registry must not stop serving
            self.error = f"{type(exc).__name__}: {exc}"
            logger.warning("champion not resolved: %s", self.error)
            return False
        self.error = None
        current = self.model
        if current is not None and (current.weights, current.sha256) == (model.weights, model.sha256):
            return False
        fresh: dict[str, Detector] = {}
        if warm is not None:
            key, options = warm
            fresh[key] = self._build(model.weights, options)
        with self._lock:
            self.model, self._detectors = model, fresh
        if current is not None:
            self.reloads += 1
            logger.info("champion changed: %s -> %s (%s)", current.version, model.version, model.weights)
        else:
            logger.info("serving %s (%s)", model.version, model.weights)
        return True

    def detector(self, key: str, options: Any) -> tuple[Detector, ServedModel]:
        """The detector for ``key`` (built from ``options`` on first use) and its model."""
        with self._lock:
            model, cache = self.model, self._detectors
        if model is None:
            raise RuntimeError(self.error or "no model loaded yet")
        det = cache.get(key)
        if det is None:
            det = self._build(model.weights, options)
            with self._lock:
                if self._detectors is cache:
                    while len(cache) >= self._max:
                        cache.pop(next(iter(cache)))
                    cache[key] = det
        return det, model

    def start_polling(self, interval: float, warm: Any = None) -> None:
        def poll() -> None:
            while not self._stop.wait(interval):
                self.load(warm)

        self._thread = threading.Thread(target=poll, name="champion-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
