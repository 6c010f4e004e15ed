"""Which model anonymizes: ``--model`` or the registry's champion, and the detector built
from it (ours, CenterFace, or both in a union)."""

from __future__ import annotations

import logging
from pathlib import Path

from pyroblur.anonymize.detector import Detector, UltralyticsDetector
from pyroblur.anonymize.errors import NoModelError
from pyroblur.anonymize.options import AnonymizeOptions

logger = logging.getLogger(__name__)

__all__ = ["build_detector", "needs_yolo", "resolve_weights", "with_resolved_weights"]


def resolve_weights(weights: Path | None, registry_path: Path | None = None, *, device: str | None = None) -> Path:
    """The weights to use: ``weights`` when given, else the registry's champion.

    With no ``weights`` and a ``device`` that runs on the CPU (``cpu``, or ``auto`` on a host
    without a GPU, decided without importing torch), the champion's ONNX export is returned
    when the registry records one and the file still has its recorded sha256: onnxruntime runs
    it without torch, which makes the first image seconds sooner. Otherwise (no export
    recorded, e.g. a champion promoted before exports; the file missing or changed; a GPU
    device; ``device=None``) the champion's ``.pt``, and the log says why when an export was
    expected. A changed ONNX is never used.

    The champion is the MLflow registered model's ``@champion`` version
    (:func:`pyroblur.registry.store.resolve_champion`), its files verified against the sha256
    recorded on the version. The registry's own errors (a champion without passed promotion
    gates, missing or altered weights, an unreachable store) pass through unchanged: they name
    the file or store and say what to do.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        NoModelError: no weights given and the registry has no usable champion.
        pyroblur.registry.store.RegistryError: the registry refuses its champion.
    """
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"model weights not found: {weights}")
        return weights
    if registry_path is None:
        from pyroblur.core.settings import get_paths

        registry_path = get_paths().registry
    from pyroblur.core.devices import cpu_without_torch
    from pyroblur.registry.store import resolve_champion

    on_cpu = device is not None and cpu_without_torch(device)
    champion = resolve_champion(registry_path, check_onnx=on_cpu)
    if champion is None:
        raise NoModelError(
            f"No --model given and no champion model in the registry {registry_path}. "
            "Train and promote a model first (the training flow promotes a champion), "
            "set PYROBLUR_DATA_DIR to the data folder that holds registry.json, "
            "or pass --model path/to/weights.pt (or .onnx).",
            subject=str(registry_path),
        )
    if champion.onnx is not None:
        logger.info("champion %s: its ONNX export %s (sha256 verified)", champion.entry.id, champion.onnx)
        return champion.onnx
    if on_cpu and champion.entry.onnx is not None:
        logger.warning("%s; using the champion's .pt %s instead", champion.onnx_problem, champion.weights)
    elif on_cpu:
        logger.info("%s; using the champion's .pt %s", champion.onnx_problem, champion.weights)
    return champion.weights  # resolve_champion verified its sha256 against the model version


def needs_yolo(options: AnonymizeOptions) -> bool:
    """Whether ``options`` need our YOLO model: always but for CenterFace faces without plates."""
    return options.face_detector != "centerface" or 1 in options.class_ids


def with_resolved_weights(options: AnonymizeOptions) -> AnonymizeOptions:
    """``options`` with ``weights`` set to the file the run loads (:func:`resolve_weights` for
    its device: the given weights, or the champion's verified ONNX on a CPU, else its ``.pt``),
    resolved once so that every file of a job, and its audit record, names the same model.
    Unchanged when no YOLO model is needed.

    Raises:
        NoModelError: see :func:`resolve_weights`.
    """
    if not needs_yolo(options):
        return options
    return options.model_copy(update={"weights": resolve_weights(options.weights, device=options.device)})


def build_detector(options: AnonymizeOptions) -> Detector:
    """The detector ``options`` ask for.

    ``face_detector="yolo"``: our YOLO model (``options.weights`` or the champion, whose
    verified ONNX export is preferred on a CPU; an ``.onnx`` runs on onnxruntime without
    torch), with tiled passes when
    ``options.tiles``; ``"centerface"``: CenterFace for faces and our
    model for plates (when plates are asked for); ``"union"``: both for faces, ours for plates.

    Raises:
        NoModelError: no weights, or weights that do not load as a YOLO model.
    """
    detectors: list[Detector] = []
    if needs_yolo(options):
        weights = resolve_weights(options.weights, device=options.device)
        classes = options.class_ids
        if options.face_detector == "centerface":
            classes = tuple(c for c in classes if c != 0)
        try:
            if weights.suffix.lower() == ".onnx":
                # onnxruntime alone: no torch import, the first image is out seconds sooner.
                from pyroblur.anonymize.onnx_detector import OnnxDetector

                yolo: Detector = OnnxDetector(
                    weights,
                    device=options.device,
                    conf=options.conf,
                    classes=classes,
                    imgsz=options.imgsz,
                    tiles=options.tiles,
                )
            else:
                yolo = UltralyticsDetector(
                    weights,
                    device=options.device,
                    half=options.half,
                    conf=options.conf,
                    classes=classes,
                    imgsz=options.imgsz,
                    tiles=options.tiles,
                )
        except Exception as exc:  # noqa: BLE001 - ultralytics raises many types for a bad file
            raise NoModelError(
                f"Could not load the model {weights}: {type(exc).__name__}: {exc}", subject=str(weights)
            ) from exc
        detectors.append(yolo)
    if options.face_detector in ("centerface", "union") and 0 in options.class_ids:
        from pyroblur.anonymize.centerface import CenterFaceDetector

        detectors.append(CenterFaceDetector(conf=options.conf_face, device=options.device))
    if len(detectors) == 1:
        return detectors[0]
    from pyroblur.anonymize.detector import UnionDetector

    return UnionDetector(detectors)
