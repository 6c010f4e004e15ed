"""Anonymize an image, a video or a folder tree: the one entry point that the CLI, the
Prefect task and the tests share.

Safety rules, checked before anything is written:

* an output never overwrites an input: the run is refused when OUTPUT resolves to INPUT
  or when any planned output path resolves to one of the input files;
* every output (and sidecar) is written under a hidden temporary name in its final folder
  and renamed into place only when complete;
* a file that cannot be read or written is skipped with its reason and the others go on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pyroblur import CLASSES
from pyroblur.anonymize.detector import Detector, UltralyticsDetector, filter_detections
from pyroblur.anonymize.ops import Mode, anonymize_image
from pyroblur.anonymize.temporal import TemporalMemory
from pyroblur.anonymize.video import (
    VIDEO_SUFFIXES,
    FrameRecord,
    VideoError,
    anonymize_video,
    output_suffix,
    probe_video,
)
from pyroblur.core.detections import Detections
from pyroblur.core.io import IMAGE_SUFFIXES, write_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_TEST_DROP_FRAME",
    "IMAGE_SUFFIXES",
    "AnonymizeOptions",
    "FileResult",
    "NoModelError",
    "Plan",
    "Report",
    "Skipped",
    "UnreadableInputError",
    "UnsafeOutputError",
    "anonymize_file",
    "anonymize_path",
    "build_detector",
    "plan_outputs",
    "resolve_weights",
]

#: Image suffixes read and written with OpenCV (lower case).
#: Test-only switch: the detections of this frame index (0-based) of every video are dropped.
ENV_TEST_DROP_FRAME = "PYROBLUR_TEST_DROP_FRAME"

ClassName = Literal["face", "license_plate"]


class NoModelError(RuntimeError):
    """No ``--model`` given and no champion in the registry."""


class UnsafeOutputError(ValueError):
    """The requested output would overwrite an input."""


class UnreadableInputError(ValueError):
    """An input that can never be processed (corrupt, truncated, unsupported): retrying
    will not help."""


class AnonymizeOptions(BaseModel):
    """How to anonymize. Boxes and sizes are in pixels unless a field says otherwise."""

    model_config = ConfigDict(extra="forbid")

    weights: Path | None = Field(None, description="YOLO .pt or .onnx weights; empty = the registry's champion")
    mode: Mode = Field(Mode.blur, description="blur, mosaic or solid")
    conf_face: float = Field(0.25, ge=0, le=1, description="confidence threshold for faces")
    conf_plate: float = Field(0.25, ge=0, le=1, description="confidence threshold for plates")
    classes: list[ClassName] = Field(
        default_factory=lambda: list(CLASSES),
        min_length=1,
        description="classes to hide",
    )
    enlarge: float = Field(1.2, gt=0, le=4, description="scale boxes around their centre before hiding")
    feather: float = Field(
        0.0,
        ge=0,
        le=1,
        description="soft edge outside each box, fraction of its smaller side",
    )
    blur_strength: float = Field(0.5, gt=0, le=2, description="blur kernel as a fraction of the box size")
    mosaic_cells: int = Field(8, ge=1, le=64, description="mosaic blocks along a box's smaller side")
    memory_frames: int = Field(
        5,
        ge=0,
        le=300,
        description="video: keep a box this many frames after last seen",
    )
    batch_size: int = Field(8, ge=1, le=256, description="frames per detector call")
    device: str = Field("auto", description="auto, cpu, cuda:0, mps...")
    imgsz: int | None = Field(
        None, ge=32, le=4096, description="detector input size (pixels); default: the model's training size"
    )
    half: bool | None = Field(None, description="FP16; default on when the device is CUDA")
    sidecar: bool = Field(False, description="write <output>.json with the boxes per image/frame")
    jpeg_quality: int = Field(95, ge=1, le=100)
    progress: bool = Field(True, description="show a progress bar for videos")

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(sorted(CLASSES.index(c) for c in set(self.classes)))

    @property
    def conf(self) -> dict[int, float]:
        return {0: self.conf_face, 1: self.conf_plate}


class FileResult(BaseModel):
    """One file written. ``boxes`` counts hidden boxes over all frames, ``remembered`` the
    ones that came from temporal memory; ``seconds`` is wall time."""

    input: Path
    output: Path
    kind: Literal["image", "video"]
    frames: int = 1
    boxes: int = 0
    remembered: int = 0
    seconds: float = 0.0
    sidecar: Path | None = None


class Skipped(BaseModel):
    input: Path
    reason: str


class Report(BaseModel):
    processed: list[FileResult] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was skipped."""
        return not self.skipped

    def to_markdown(self, title: str = "Anonymization report") -> str:
        """A markdown summary: counts, then one table row per file."""
        videos = [r for r in self.processed if r.kind == "video"]
        lines = [
            f"# {title}",
            "",
            "| written | images | videos | video frames | boxes hidden | from memory | skipped |",
            "|---|---|---|---|---|---|---|",
            f"| {len(self.processed)} | {len(self.processed) - len(videos)} | {len(videos)} "
            f"| {sum(r.frames for r in videos)} | {sum(r.boxes for r in self.processed)} "
            f"| {sum(r.remembered for r in self.processed)} | {len(self.skipped)} |",
        ]
        if self.skipped:
            lines += ["", "## Skipped", "", "| file | reason |", "|---|---|"]
            lines += [f"| `{s.input}` | {s.reason.replace('|', '/')} |" for s in self.skipped]
        if self.processed:
            lines += ["", "## Written", "", "| input | output | frames | boxes | seconds |", "|---|---|---|---|---|"]
            lines += [
                f"| `{r.input}` | `{r.output}` | {r.frames} | {r.boxes} | {r.seconds:.2f} |" for r in self.processed
            ]
        return "\n".join(lines) + "\n"


class Plan(BaseModel):
    """Input -> output pairs to process, and inputs skipped up front."""

    items: list[tuple[Path, Path]] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)


def _kind(path: Path) -> Literal["image", "video"] | None:
    s = path.suffix.lower()
    return "image" if s in IMAGE_SUFFIXES else "video" if s in VIDEO_SUFFIXES else None


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def plan_outputs(input: Path, output: Path) -> Plan:
    """Map each input file to its output path, refusing any plan that would overwrite an
    input.

    * INPUT a file: OUTPUT is the output file, or a folder (existing, or named without a
      suffix) that receives a file of the same name.
    * INPUT a folder: every file below it, recursively, goes to the same relative path under
      OUTPUT. Hidden files and folders are ignored; so is OUTPUT itself when it lies inside
      INPUT. Files that are neither images nor videos are listed as skipped.

    A video whose container cannot hold H.264 (``.webm``, ``.mpg``...) is written as
    ``.mkv``.

    Raises:
        FileNotFoundError: INPUT does not exist.
        UnsafeOutputError: OUTPUT resolves to INPUT, or an output would replace an input.
    """
    input, output = Path(input), Path(output)
    if not input.exists():
        raise FileNotFoundError(f"input not found: {input}")
    src_root, dst_root = input.resolve(), output.resolve()
    if src_root == dst_root:
        raise UnsafeOutputError(f"OUTPUT {output} is INPUT {input}: refusing to overwrite inputs")
    plan = Plan()
    if input.is_file():
        if output.is_dir() or (not output.exists() and output.suffix == ""):
            dst = output / input.name
        else:
            dst = output
        if _kind(input) is None:
            plan.skipped.append(Skipped(input=input, reason=f"unsupported file type {input.suffix!r}"))
            return plan
        if _kind(input) == "video":
            dst = dst.with_suffix(output_suffix(dst.suffix))
        elif dst.suffix.lower() not in IMAGE_SUFFIXES:
            raise UnsafeOutputError(f"OUTPUT {dst} does not end in an image suffix {sorted(IMAGE_SUFFIXES)}")
        plan.items.append((input, dst))
    else:
        if output.is_file():
            raise UnsafeOutputError(f"INPUT {input} is a folder but OUTPUT {output} is a file")
        taken: dict[Path, Path] = {}
        out_inside = dst_root.is_relative_to(src_root)
        for src in sorted(p for p in input.rglob("*") if p.is_file()):
            rel = src.relative_to(input)
            if _hidden(rel):
                continue
            if out_inside and (src_root / rel).is_relative_to(dst_root):
                continue  # OUTPUT inside INPUT: never read our own outputs back
            kind = _kind(src)
            if kind is None:
                plan.skipped.append(Skipped(input=src, reason=f"unsupported file type {src.suffix!r}"))
                continue
            dst = output / rel
            if kind == "video":
                dst = dst.with_suffix(output_suffix(dst.suffix))
            key = dst.resolve()
            if key in taken:
                plan.skipped.append(
                    Skipped(
                        input=src,
                        reason=f"output {dst} is already the output of {taken[key]}",
                    )
                )
                continue
            taken[key] = src
            plan.items.append((src, dst))
    inputs = {s.resolve() for s, _ in plan.items} | {s.input.resolve() for s in plan.skipped}
    for _, dst in plan.items:
        if dst.resolve() in inputs:
            raise UnsafeOutputError(
                f"output {dst} would overwrite input {dst.resolve()}: choose an OUTPUT outside INPUT"
            )
    return plan


def resolve_weights(weights: Path | None, registry_path: Path | None = None) -> Path:
    """The weights to use: ``weights`` when given, else the registry's champion.

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        NoModelError: no weights given and the registry has no champion.
    """
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"model weights not found: {weights}")
        return weights
    if registry_path is None:
        from pyroblur.core.settings import get_paths

        registry_path = get_paths().registry
    champion = None
    try:
        from pyroblur.registry.store import champion_weights  # lazy: optional at import time
    except ImportError as exc:
        logger.debug("pyroblur.registry.store unavailable: %s", exc)
    else:
        try:
            champion = champion_weights(registry_path)
        except Exception as exc:  # noqa: BLE001 - any registry failure means "no usable model"
            raise NoModelError(
                f"Could not read the model registry {registry_path}: {exc}. Fix or remove it, or pass --model."
            ) from exc
    if champion is None:
        raise NoModelError(
            f"No --model given and no champion model in the registry {registry_path}. "
            "Train and promote a model first (the training flow promotes a champion), "
            "set PYROBLUR_DATA_DIR to the data folder that holds registry.json, "
            "or pass --model path/to/weights.pt (or .onnx)."
        )
    if not Path(champion).is_file():
        raise NoModelError(
            f"The champion in {registry_path} points to {champion}, which does not exist; "
            "pass --model or promote another model."
        )
    return Path(champion)


def build_detector(options: AnonymizeOptions) -> Detector:
    """An :class:`UltralyticsDetector` from ``options`` (champion when no weights given).

    Raises:
        NoModelError: no weights, or weights that do not load as a YOLO model.
    """
    weights = resolve_weights(options.weights)
    try:
        return UltralyticsDetector(
            weights,
            device=options.device,
            half=options.half,
            conf=options.conf,
            classes=options.class_ids,
            imgsz=options.imgsz,
        )
    except Exception as exc:  # noqa: BLE001 - ultralytics raises many types for a bad file
        raise NoModelError(f"Could not load the model {weights}: {type(exc).__name__}: {exc}") from exc


def _drop_frame_from_env() -> int | None:
    value = os.environ.get(ENV_TEST_DROP_FRAME, "").strip()
    return int(value) if value else None


def _det_json(dets: Detections, remembered: np.ndarray | None = None) -> list[dict[str, Any]]:
    rows = []
    for i in range(len(dets)):
        row: dict[str, Any] = {
            "class": CLASSES[int(dets.class_id[i])],
            "class_id": int(dets.class_id[i]),
            "confidence": round(float(dets.confidence[i]), 4),
            "xyxy": [round(float(v), 1) for v in dets.xyxy[i]],
        }
        if remembered is not None:
            row["remembered"] = bool(remembered[i])
        rows.append(row)
    return rows


def _sidecar_path(dst: Path) -> Path:
    return dst.with_name(dst.name + ".json")


def _hider(options: AnonymizeOptions) -> Callable[[np.ndarray, Detections], np.ndarray]:
    def hide(frame: np.ndarray, dets: Detections) -> np.ndarray:
        return anonymize_image(
            frame,
            dets.xyxy,
            options.mode,
            enlarge=options.enlarge,
            feather=options.feather,
            blur_strength=options.blur_strength,
            mosaic_cells=options.mosaic_cells,
        )

    return hide


def _filtered(detector: Detector, options: AnonymizeOptions) -> Detector:
    """Apply the class selection and thresholds to any detector (an injected one too)."""

    def detect(frames: list[np.ndarray]) -> list[Detections]:
        return [filter_detections(d, options.conf, options.class_ids) for d in detector(frames)]

    return detect


def _read_image(path: Path) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """``(bgr, restore)``: a BGR uint8 image and a function that turns an anonymized BGR
    image back into the file's layout (gray, alpha channel)."""
    data = np.fromfile(str(path), np.uint8)
    if path.suffix.lower() in {".jpg", ".jpeg"}:
        # IMREAD_COLOR applies the EXIF orientation; the written file is upright, EXIF-free.
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    else:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise UnreadableInputError("not a readable image (corrupt or truncated?)")
    if img.dtype != np.uint8:
        logger.info("%s: %s image written as 8-bit", path, img.dtype)
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), lambda out: cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    if img.shape[2] == 4:
        alpha = img[..., 3:]
        return np.ascontiguousarray(img[..., :3]), lambda out: np.concatenate([out, alpha], axis=2)
    return img, lambda out: out


def anonymize_file(
    src: Path,
    dst: Path,
    options: AnonymizeOptions,
    detector: Detector,
) -> FileResult:
    """Anonymize one image or video into ``dst`` (atomic). Raises on any failure.

    ``detector`` gets the class selection and per-class thresholds of ``options`` applied
    on top of its own. For videos the test switch ``PYROBLUR_TEST_DROP_FRAME`` is honoured.
    """
    start = time.perf_counter()
    detect = _filtered(detector, options)
    kind = _kind(src)
    sidecar = _sidecar_path(dst) if options.sidecar else None
    if kind == "image":
        bgr, restore = _read_image(src)
        dets = detect([bgr])[0]
        out = restore(_hider(options)(bgr, dets))
        params = []
        if dst.suffix.lower() in {".jpg", ".jpeg"}:
            params = [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality]
        ok, buf = cv2.imencode(dst.suffix, out, params)
        if not ok:
            raise ValueError(f"OpenCV cannot encode {dst.suffix!r}")
        write_atomic(dst, buf.tobytes())
        if sidecar is not None:
            doc = {
                "input": str(src),
                "output": str(dst),
                "width": bgr.shape[1],
                "height": bgr.shape[0],
                "detections": _det_json(dets),
            }
            write_atomic(sidecar, json.dumps(doc, indent=1).encode())
        result = FileResult(input=src, output=dst, kind="image", boxes=len(dets), sidecar=sidecar)
    elif kind == "video":
        try:
            probe_video(src)
        except VideoError as exc:
            raise UnreadableInputError(str(exc)) from exc
        frames: list[dict[str, Any]] = []
        counts = {"boxes": 0, "remembered": 0}

        def on_frame(rec: FrameRecord) -> None:
            counts["boxes"] += len(rec.detections)
            counts["remembered"] += int(rec.remembered.sum())
            if sidecar is not None:
                frames.append(
                    {
                        "frame": rec.index,
                        "detections": _det_json(rec.detections, rec.remembered),
                    }
                )

        memory = TemporalMemory(options.memory_frames) if options.memory_frames else None
        info, n = anonymize_video(
            src,
            dst,
            detect,
            _hider(options),
            batch_size=options.batch_size,
            memory=memory,
            drop_frame=_drop_frame_from_env(),
            progress=options.progress,
            on_frame=on_frame,
        )
        if sidecar is not None:
            doc = {
                "input": str(src),
                "output": str(dst),
                "width": info.width,
                "height": info.height,
                "fps": info.fps,
                "frames": frames,
            }
            write_atomic(sidecar, json.dumps(doc).encode())
        result = FileResult(
            input=src,
            output=dst,
            kind="video",
            frames=n,
            boxes=counts["boxes"],
            remembered=counts["remembered"],
            sidecar=sidecar,
        )
    else:
        raise UnreadableInputError(f"unsupported file type {src.suffix!r}")
    result.seconds = round(time.perf_counter() - start, 3)
    logger.info("Anonymized %s -> %s (%d boxes)", src, dst, result.boxes)
    return result


def anonymize_path(
    input: Path,
    output: Path,
    options: AnonymizeOptions | None = None,
    detector: Detector | None = None,
) -> Report:
    """Anonymize an image, a video, or a folder tree (see :func:`plan_outputs`).

    Args:
        input: file or folder.
        output: output file or folder; never an input.
        options: settings (defaults when ``None``).
        detector: a :class:`Detector`; ``None`` builds one from ``options.weights`` or the
            registry's champion.

    Returns:
        A :class:`Report` of written and skipped files. Per-file failures are reported, not
        raised.

    Raises:
        FileNotFoundError, UnsafeOutputError, NoModelError: before anything is written.
    """
    options = options or AnonymizeOptions()
    plan = plan_outputs(Path(input), Path(output))
    report = Report(skipped=list(plan.skipped))
    if plan.items and detector is None:
        detector = build_detector(options)
    for src, dst in plan.items:
        try:
            report.processed.append(anonymize_file(src, dst, options, detector))  # type: ignore[arg-type]
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
            logger.warning("Skipped %s: %s", src, exc)
            report.skipped.append(Skipped(input=src, reason=f"{type(exc).__name__}: {exc}"))
    return report
