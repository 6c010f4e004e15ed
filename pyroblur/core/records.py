"""Common sample records produced by every source (synthetic, WIDER FACE, COCO, YOLO, ...).

Boxes are in **pixels** (``x1, y1, x2, y2``) of the original image. Each source's records
are written once as JSON lines, content-addressed (``<source>-<digest>.jsonl`` under the
download stage's index folder, see ``pyroblur.data.sources.fetch_and_index``), so curation
reads every source the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class BoxRecord(BaseModel):
    """One labelled box in pixels. ``attributes`` keeps source extras (e.g. WIDER flags)."""

    model_config = ConfigDict(extra="forbid")

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    attributes: dict[str, int | float | str | bool] = Field(default_factory=dict)

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


class SampleRecord(BaseModel):
    """One image and its ground truth, as a source delivers it."""

    model_config = ConfigDict(extra="forbid")

    filepath: str
    source: str
    source_split: str | None = None
    width: int
    height: int
    boxes: list[BoxRecord] = Field(default_factory=list)
    issues: list[str] = Field(
        default_factory=list,
        description="Problems the source found but did not fail on, for curation to report: "
        "'missing_labels' (no label file), 'bad_labels' (label file not parseable).",
    )


def save_records(records: list[SampleRecord], path: Path) -> None:
    """Write records as JSON lines, atomically (temp name then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(rec.model_dump_json() + "\n")
    tmp.replace(path)


def load_records(path: Path) -> list[SampleRecord]:
    """Read records written by :func:`save_records`; errors name the file and line."""
    out: list[SampleRecord] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(SampleRecord.model_validate(json.loads(line)))
            except Exception as exc:  # noqa: BLE001 - re-raised with location
                raise ValueError(f"{path}:{lineno}: bad sample record: {exc}") from exc
    return out
