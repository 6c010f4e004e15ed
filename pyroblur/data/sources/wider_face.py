"""WIDER FACE from its Hugging Face mirror (``CUHK-CSE/wider_face``, ``data/`` folder).

Layout under ``dest`` (``<data root>/raw/<name>``)::

    archives/WIDER_train.zip, WIDER_val.zip, wider_face_split.zip   (+ .verified.json)
    extracted/WIDER_train/WIDER_train/images/0--Parade/*.jpg
    extracted/wider_face_split/wider_face_split/wider_face_train_bbx_gt.txt

Files are read at the pinned commit (``revision``) and checked against the pinned sha256
(``sha256``; defaults in :mod:`pyroblur.data.sources.models`). Licence: CC BY-NC-ND 4.0
(non-commercial).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyroblur.core.records import SampleRecord
from pyroblur.data.archive import extract_archive
from pyroblur.data.download import PlannedDownload, download_all
from pyroblur.data.formats import parse_wider_annotations
from pyroblur.data.sources._common import SourceDataError, image_size, policy_from
from pyroblur.data.sources.models import WiderFaceSource

log = logging.getLogger(__name__)

SPLIT_ZIP = "wider_face_split.zip"

#: Published sizes (bytes) of the files: the image zips' match the reference notes and the
#: public projects that pin this mirror (docs/formats.md); a mirror that repackages them needs
#: ``verify_checksums: false``. The sha256 pins live in the config (``sha256``).
SIZES: dict[str, int] = {
    "WIDER_train.zip": 1_465_602_149,
    "WIDER_val.zip": 362_752_168,
    SPLIT_ZIP: 3_591_642,
}


def _files(cfg: WiderFaceSource) -> list[str]:
    return [f"WIDER_{split}.zip" for split in cfg.splits] + [SPLIT_ZIP]


def plan(cfg: WiderFaceSource, dest: Path) -> list[PlannedDownload]:
    """The zips :func:`fetch` downloads: URL at the pinned commit, size (bytes), sha256, destination."""
    return [
        PlannedDownload(
            url=cfg.file_url("data", name),
            dest=Path(dest) / "archives" / name,
            size=SIZES.get(name) if cfg.verify_checksums else None,
            sha256=cfg.sha256.get(name) if cfg.verify_checksums else None,
            token_env=cfg.token_env if cfg.sends_token else None,
        )
        for name in _files(cfg)
    ]


def _find(root: Path, relative: str) -> Path:
    """``root/<one top folder>/relative`` or ``root/relative``, whichever exists."""
    direct = root / relative
    if direct.exists():
        return direct
    matches = sorted(root.glob(f"*/{relative}"))
    if not matches:
        raise SourceDataError(
            f"{relative} not found in {root}; the archive does not have the WIDER FACE layout (check base_url)"
        )
    return matches[0]


def fetch(cfg: WiderFaceSource, dest: Path) -> list[SampleRecord]:
    """Download, verify, extract WIDER FACE and return one record per image.

    Boxes are faces in pixels ``x1, y1, x2, y2`` with the WIDER flags (blur, expression,
    illumination, invalid, occlusion, pose) as attributes; ``invalid`` faces are kept so
    curation can decide. ``max_images`` keeps the first N images of each split in
    annotation-file order. An annotated image missing from the zip is kept as a record
    without size, which curation rejects as ``missing_file`` (and reports).
    """
    dest = Path(dest).resolve()
    planned = plan(cfg, dest)
    paths = {p.dest.name: p for p in planned}
    download_all(planned, policy=policy_from(cfg.http))
    split_root = extract_archive(paths[SPLIT_ZIP].dest, dest / "extracted" / "wider_face_split")

    records: list[SampleRecord] = []
    for split in cfg.splits:
        zip_name = f"WIDER_{split}.zip"
        images_root = _find(
            extract_archive(paths[zip_name].dest, dest / "extracted" / f"WIDER_{split}"),
            f"WIDER_{split}/images",
        )
        gt = _find(split_root, f"wider_face_split/wider_face_{split}_bbx_gt.txt")
        entries = parse_wider_annotations(gt.read_text(encoding="utf-8"), source_name=str(gt))
        if cfg.max_images is not None:
            entries = entries[: cfg.max_images]
        missing = []
        for relpath, boxes in entries:
            image = images_root / relpath
            if image.is_file():
                width, height = image_size(image)
            else:
                missing.append(relpath)
                width, height = 0, 0
            records.append(
                SampleRecord(
                    filepath=str(image),
                    source=cfg.name,
                    source_split=split,
                    width=width,
                    height=height,
                    boxes=boxes,
                )
            )
        if missing:
            log.warning(
                "WIDER %s: %d annotated images are missing from %s (e.g. %s); curation rejects them",
                split,
                len(missing),
                images_root,
                missing[:3],
            )
        log.info("WIDER %s: %d images", split, len(entries) - len(missing))
    return records
