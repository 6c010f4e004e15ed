"""Which output each input goes to, refusing any plan that would overwrite an input."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pyroblur.anonymize.errors import UnsafeOutputError
from pyroblur.anonymize.options import Skipped
from pyroblur.anonymize.video import VIDEO_SUFFIXES, output_suffix
from pyroblur.core.io import IMAGE_SUFFIXES

__all__ = ["Plan", "file_kind", "plan_outputs"]


class Plan(BaseModel):
    """Input -> output pairs to process, and inputs skipped up front."""

    items: list[tuple[Path, Path]] = Field(default_factory=list)
    skipped: list[Skipped] = Field(default_factory=list)


def file_kind(path: Path) -> Literal["image", "video"] | None:
    """``image``, ``video`` or ``None`` (unsupported), from the suffix."""
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
        if file_kind(input) is None:
            plan.skipped.append(Skipped(input=input, reason=f"unsupported file type {input.suffix!r}"))
            return plan
        if file_kind(input) == "video":
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
            kind = file_kind(src)
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
