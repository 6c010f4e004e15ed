"""The Open Images source through the installed FiftyOne's zoo code, on a folder in the zoo's layout.

The files are what the zoo downloads (``fiftyone.utils.openimages._ANNOTATION_DOWNLOAD_URLS``),
cut to a few rows with their real headers: ``class-descriptions-boxable.csv`` (no header,
``MID,name``), ``train-images-boxable-with-rotation.csv``, ``oidv6-train-annotations-bbox.csv``
(relative XMin/XMax/YMin/YMax) and the renamed ``bbox_labels_600_hierarchy.json``. When every
file the zoo wants is present it downloads nothing, which is also how a user works offline.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from PIL import Image

from pyroblur.data.sources import fetch_source, plan_source
from pyroblur.data.sources.models import OpenImagesSource
from pyroblur.data.sources.open_images import ZOO_NAME, importer_kwargs, zoo_kwargs

FACE, PLATE, CAR = "/m/0dzct", "/m/01jfm_", "/m/0k4j"  # Open Images MIDs of the three classes
IMAGES = {"000002b66c9c498e": (200, 100), "000a1249af2bc5f0": (120, 80), "00c359f294f7dcd9": (64, 64)}
BBOX_HEADER = (
    "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
)
IDS_HEADER = (
    "ImageID,Subset,OriginalURL,OriginalLandingURL,License,AuthorProfileURL,Author,Title,"
    "OriginalSize,OriginalMD5,Thumbnail300KURL,Rotation"
)


def write_zoo_split(root: Path, split: str = "train") -> Path:
    split_dir = root / ZOO_NAME / split
    (split_dir / "metadata").mkdir(parents=True)
    (split_dir / "labels").mkdir()
    (split_dir / "data").mkdir()
    (split_dir / "metadata" / "classes.csv").write_text(
        f"/m/011k07,Tortoise\n{CAR},Car\n{FACE},Human face\n{PLATE},Vehicle registration plate\n"
    )
    ids = "".join(
        f"{i},{split},https://farm.example/{i}.jpg,https://flickr.example/{i},"
        f"https://creativecommons.org/licenses/by/2.0/,https://flickr.example/u,Someone,title,"
        f"1000,md5==,https://thumb.example/{i}.jpg,0.0\n"
        for i in IMAGES
    )
    (split_dir / "metadata" / "image_ids.csv").write_text(IDS_HEADER + "\n" + ids)
    (split_dir / "metadata" / "hierarchy.json").write_text(
        json.dumps(
            {
                "LabelName": "Entity",
                "Subcategory": [
                    {"LabelName": "Human face"},
                    {"LabelName": "Car", "Part": [{"LabelName": "Vehicle registration plate"}]},
                ],
            }
        )
    )
    rows = [
        f"000002b66c9c498e,xclick,{FACE},1,0.1,0.4,0.2,0.6,1,0,0,0,0",
        f"000002b66c9c498e,xclick,{PLATE},1,0.5,0.75,0.5,0.7,0,1,0,0,0",
        f"000002b66c9c498e,xclick,{CAR},1,0.0,1.0,0.0,1.0,0,0,0,0,0",
        f"000a1249af2bc5f0,activemil,{PLATE},1,0.0,0.5,0.25,0.5,0,0,1,0,0",
        f"00c359f294f7dcd9,xclick,{CAR},1,0.1,0.2,0.1,0.2,0,0,0,0,0",  # no face, no plate
    ]
    (split_dir / "labels" / "detections.csv").write_text(BBOX_HEADER + "\n" + "\n".join(rows) + "\n")
    for image_id, size in IMAGES.items():
        Image.new("RGB", size, (90, 90, 90)).save(split_dir / "data" / f"{image_id}.jpg")
    return split_dir


def test_our_calls_bind_to_the_installed_fiftyone_signatures(tmp_path: Path) -> None:
    """Fails when FiftyOne renames or drops an argument we pass (it raises TypeError at run time)."""
    import fiftyone.utils.openimages as fouo
    import fiftyone.zoo.datasets.base as fozb

    cfg = OpenImagesSource()
    zoo = dict(zoo_kwargs(cfg))
    zoo.pop("split")  # download_zoo_dataset's own argument; the rest go to the zoo class
    inspect.signature(fozb.OpenImagesV7Dataset).bind(**zoo)
    import fiftyone.zoo as foz

    assert "split" in inspect.signature(foz.download_zoo_dataset).parameters
    inspect.signature(fouo.OpenImagesV7DatasetImporter).bind(**importer_kwargs(cfg, tmp_path))


def test_open_images_fetch_runs_the_zoo_code_offline(tmp_path: Path) -> None:
    dest = tmp_path / "raw" / "oi"
    write_zoo_split(dest / "zoo")
    cfg = OpenImagesSource(name="oi", max_samples=10)
    (planned,) = plan_source(cfg, dest)
    assert planned.dest == dest / "zoo" / ZOO_NAME / "train"

    records = fetch_source(cfg, dest)

    got = {Path(r.filepath).stem: r for r in records}
    assert set(got) == {"000002b66c9c498e", "000a1249af2bc5f0"}  # the car-only image is not selected
    first = got["000002b66c9c498e"]
    assert (first.width, first.height, first.source, first.source_split) == (200, 100, "oi", "train")
    boxes = sorted((b.class_id, round(b.x1), round(b.y1), round(b.x2), round(b.y2)) for b in first.boxes)
    assert boxes == [(0, 20, 20, 80, 60), (1, 100, 50, 150, 70)]  # the car box is dropped
    face = next(b for b in first.boxes if b.class_id == 0)
    assert face.attributes["IsOccluded"] is True and face.attributes["IsTruncated"] is False
    plate = got["000a1249af2bc5f0"].boxes
    assert [(b.class_id, b.x2, b.attributes["IsGroupOf"]) for b in plate] == [(1, 60, True)]
    assert all(Path(r.filepath).is_file() for r in records)


def test_open_images_max_samples_is_honoured_by_the_zoo(tmp_path: Path) -> None:
    dest = tmp_path / "oi"
    write_zoo_split(dest / "zoo")
    records = fetch_source(OpenImagesSource(name="oi", max_samples=1, seed=0), dest)
    assert len(records) == 1 and records[0].boxes


@pytest.mark.parametrize("split", ["validation"])
def test_open_images_missing_files_offline_fail_naming_the_folder(tmp_path: Path, split: str) -> None:
    """No zoo files and no network: a permanent error that says where to put the files."""
    from pyroblur.core.errors import PyroblurError, is_transient

    cfg = OpenImagesSource(name="oi", split=split, max_samples=1)
    with pytest.raises(PyroblurError) as err:
        fetch_source(cfg, tmp_path / "oi")
    text = str(err.value)
    assert str(tmp_path / "oi" / "zoo" / ZOO_NAME / split) in text and "`local` source" in text
    assert not is_transient(err.value)
