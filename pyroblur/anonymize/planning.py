"""Which output each input goes to, refusing any plan that would overwrite an input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pyroblur.anonymize.audit import audit_path
from pyroblur.anonymize.errors import UnsafeOutputError
from pyroblur.anonymize.options import Skipped
from pyroblur.anonymize.video import VIDEO_SUFFIXES, output_suffix
from pyroblur.core.hashing import sha256_file
from pyroblur.core.io import IMAGE_SUFFIXES
from pyroblur.core.limits import check_regular_file

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


def _earlier_output(path: Path) -> bool:
    """True when ``path`` is the output of an earlier run: its audit record beside it names
    it and holds its sha256 (an original copied there has no such record)."""
    record = audit_path(path)
    try:
        doc = json.loads(record.read_text())
        return doc["output"]["sha256"] == sha256_file(path)
    except (OSError, ValueError, KeyError, TypeError):
        return False


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
        UnsafeOutputError: OUTPUT resolves to INPUT, an output would replace an input, or
            OUTPUT inside INPUT holds originals.
        InputError: INPUT is a FIFO, a device or a socket.
    """
    input, output = Path(input), Path(output)
    if not input.exists():
        raise FileNotFoundError(f"input not found: {input}")
    if not input.is_file() and not input.is_dir():
        # a FIFO or a device: reading it would block or never end; not a folder either
        check_regular_file(input, what="INPUT")
    src_root, dst_root = input.resolve(), output.resolve()
    if src_root == dst_root:
        raise UnsafeOutputError(f"OUTPUT {output} is INPUT {input}: refusing to overwrite inputs")
    plan = Plan()
    every_input: set[Path] = set()  # every file under INPUT, those under OUTPUT included
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
        originals_in_output: list[Path] = []
        for src in sorted(input.rglob("*")):
            rel = src.relative_to(input)
            if _hidden(rel):
                continue
            if src.is_symlink() and src.is_dir():
                # rglob does not descend into linked folders: say so instead of a silent gap
                plan.skipped.append(
                    Skipped(input=src, reason="symlinked folder not followed (give it as INPUT of its own)")
                )
                continue
            if not src.is_file():
                continue
            kind = file_kind(src)
            if out_inside and (src_root / rel).is_relative_to(dst_root):
                # OUTPUT inside INPUT: our own earlier outputs are not read back (and may be
                # replaced), but an original found there would be neither anonymized nor
                # protected: the run is refused below
                if kind is not None and not _earlier_output(src):
                    originals_in_output.append(src)
                continue
            every_input.add(src.resolve())
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
        if originals_in_output:
            raise UnsafeOutputError(
                f"OUTPUT {output} lies inside INPUT {input} and holds {len(originals_in_output)} image(s)/video(s) "
                f"that are not outputs of an earlier run (e.g. {originals_in_output[0]}): they would be neither "
                "anonymized nor safe from being overwritten; choose an OUTPUT outside INPUT"
            )
    inputs = every_input | {s.resolve() for s, _ in plan.items} | {s.input.resolve() for s in plan.skipped}
    for _, dst in plan.items:
        if dst.resolve() in inputs:
            raise UnsafeOutputError(
                f"output {dst} would overwrite input {dst.resolve()}: choose an OUTPUT outside INPUT"
            )
    return plan
