"""Typed configuration of every dataset source (a discriminated union on ``kind``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Unique name of this source; becomes the sample's `source` field.")


class HttpOptions(BaseModel):
    """How HTTP sources download (see ``pyroblur.data.download.DownloadPolicy``)."""

    model_config = ConfigDict(extra="forbid")

    retries: int = Field(5, ge=0, le=50, description="Extra attempts on connection errors, timeouts, 5xx.")
    backoff_s: float = Field(
        2.0, ge=0, description="First wait before a retry, seconds; doubles each retry (max 60 s)."
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="Connect timeout, seconds.")
    read_timeout_s: float = Field(60.0, gt=0, description="Timeout between two received chunks, seconds.")
    progress: bool = Field(True, description="Show a progress bar per file.")


class SyntheticSource(_Source):
    """Embedded offline generator of street-like photos with faces and license plates."""

    kind: Literal["synthetic"] = "synthetic"
    name: str = "synthetic"
    num_images: int = Field(600, ge=1, description="Images to generate.")
    image_size: int = Field(256, ge=64, le=4096, description="Side of the square images, pixels.")
    seed: int = Field(0, description="Generator seed: same seed, same images.")
    negative_fraction: float = Field(0.1, ge=0, le=1, description="Fraction of images with neither a face nor a plate.")


class WiderFaceSource(_Source):
    """WIDER FACE from its Hugging Face mirror (images zips + wider_face_split.zip)."""

    kind: Literal["wider_face"] = "wider_face"
    name: str = "wider_face"
    base_url: str = Field(
        "https://huggingface.co/datasets/CUHK-CSE/wider_face/resolve/main/data",
        description="Folder URL holding WIDER_train.zip, WIDER_val.zip, wider_face_split.zip.",
    )
    splits: list[Literal["train", "val"]] = Field(default_factory=lambda: ["train", "val"])
    max_images: int | None = Field(None, ge=1, description="Cap per split (None = all).")
    verify_checksums: bool = Field(
        True,
        description="Check the published sizes and sha256 of the zips; turn off only for a "
        "mirror that repackages them.",
    )
    http: HttpOptions = Field(default_factory=HttpOptions)


class HuggingFaceCocoSource(_Source):
    """COCO-JSON zips on Hugging Face, e.g. keremberke/license-plate-object-detection."""

    kind: Literal["hf_coco"] = "hf_coco"
    name: str = "license_plates"
    base_url: str = Field(
        "https://huggingface.co/datasets/keremberke/license-plate-object-detection/resolve/main/data",
        description="Folder URL holding <split>.zip files with COCO JSON inside.",
    )
    splits: list[str] = Field(default_factory=lambda: ["train", "valid", "test"])
    class_map: dict[str, Literal["face", "license_plate", "ignore"]] = Field(
        default_factory=lambda: {"license_plate": "license_plate", "license-plate": "license_plate"},
        description="Source category name -> our class (or 'ignore'). A name used by an "
        "annotation but missing here is an error.",
    )
    annotation_file: str = Field("_annotations.coco.json", description="Name of the COCO JSON inside each split zip.")
    http: HttpOptions = Field(default_factory=HttpOptions)


class RoboflowSource(_Source):
    """Roboflow Universe project, downloaded with the `roboflow` package (needs an API key)."""

    kind: Literal["roboflow"] = "roboflow"
    name: str = "roboflow_plates"
    workspace: str = "roboflow-universe-projects"
    project: str = "license-plate-recognition-rxg4e"
    version: int = 4
    api_key_env: str = Field("ROBOFLOW_API_KEY", description="Environment variable holding the key.")
    api_key_secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the key (used when set)."
    )
    class_map: dict[str, Literal["face", "license_plate", "ignore"]] = Field(
        default_factory=lambda: {"License_Plate": "license_plate", "license_plate": "license_plate"},
        description="Class name from the export's data.yaml -> our class (or 'ignore').",
    )
    export_format: str = Field("yolov11", description="Roboflow export format (YOLO txt layout).")


class OpenImagesSource(_Source):
    """Open Images V7 through the FiftyOne zoo."""

    kind: Literal["open_images"] = "open_images"
    name: str = "open_images"
    classes: dict[str, Literal["face", "license_plate"]] = Field(
        default_factory=lambda: {"Human face": "face", "Vehicle registration plate": "license_plate"}
    )
    split: Literal["train", "validation", "test"] = "train"
    max_samples: int = Field(1000, ge=1)
    seed: int | None = Field(0, description="Shuffle seed of the zoo's sample selection (None = no shuffle).")


class LocalFolderSource(_Source):
    """A local folder in YOLO or COCO layout."""

    kind: Literal["local"] = "local"
    path: Path
    format: Literal["yolo", "coco"]
    class_map: dict[str, Literal["face", "license_plate", "ignore"]] = Field(
        description="Source class name (YOLO: name from data.yaml, or the numeric id as text) -> our class."
    )


SourceConfig = Annotated[
    SyntheticSource | WiderFaceSource | HuggingFaceCocoSource | RoboflowSource | OpenImagesSource | LocalFolderSource,
    Field(discriminator="kind"),
]
