"""Typed configuration of every dataset source (a discriminated union on ``kind``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Commit of CUHK-CSE/wider_face pinned by default. Found in several public projects that pin
#: this mirror (each with the same sizes and sha256 of the zips as below); see docs/formats.md.
WIDER_REVISION = "db171f1b7fedf4d3453e81297ff02f9915356d19"
#: sha256 (= Hugging Face LFS object id) of each file of the pinned WIDER revision.
WIDER_SHA256 = {
    "WIDER_train.zip": "e23b76129c825cafae8be944f65310b2e1ba1c76885afe732f179c41e5ed6d59",
    "WIDER_val.zip": "f9efbd09f28c5d2d884be8c0eaef3967158c866a593fc36ab0413e4b2a58a17a",
    "wider_face_split.zip": "c7561e4f5e7a118c249e0a5c5c902b0de90bbf120d7da9fa28d99041f68a8a5c",
}
#: Commit of keremberke/license-plate-object-detection that last changed data/*.zip on main
#: (the Hub's history of data/); the zips' sha256 are not pinned by default (see docs/formats.md).
KEREMBERKE_REVISION = "62d190d43a2275439526444d1cd520b4c478adbd"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
_NAME = (
    "Unique name of this source; becomes the sample's 'source' field and the folder <data root>/raw/<name> "
    "(letters, digits, '.', '_', '-'; no path)."
)


def _kind_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """JSON schema of one source kind, shaped so that the Prefect server's validator (jsonschema,
    which ignores OpenAPI's ``discriminator``) names the key that is wrong.

    The sources' union is an ``anyOf``; jsonschema reports the deepest error among the branches,
    and gives up (\"not valid under any of the given schemas\") on a tie. So the branch of another
    kind fails at the source itself (``if``/``else``: depth 0) instead of at its ``kind`` key, and
    the branch of the source's own kind reports the bad field (depth 1). One branch also carries the
    list of kinds, so that an unknown kind is the one deepest error: "'flickr' is not one of [...]".
    """
    if "kind" not in cls.model_fields:  # the shared bases are never in a schema of their own
        return
    kind = cls.model_fields["kind"].default
    prop = schema["properties"]["kind"]
    prop.pop("const", None)
    prop.pop("enum", None)
    prop["description"] = f"Source kind: '{kind}' (one of {', '.join(SOURCE_KINDS)})."
    schema["if"] = {"properties": {"kind": {"const": kind}}, "required": ["kind"]}
    # An unknown key is reported at the key itself (depth 1) and only by its own kind's branch:
    # ``additionalProperties: false`` would fail at the source's level, tied with the other kinds.
    schema.pop("additionalProperties", None)
    schema["then"] = {
        "properties": dict.fromkeys(schema["properties"], True),
        "additionalProperties": {"not": {"description": f"not a key of a {kind} source"}},
    }
    if kind == SOURCE_KINDS[0]:
        schema["else"] = {"properties": {"kind": {"enum": list(SOURCE_KINDS)}}, "not": {}}
    else:
        schema["else"] = False


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_kind_schema)

    name: str = Field(description=_NAME)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # the name becomes a folder under raw/: "/etc" or "../../x" would send downloads there
        if not _NAME_RE.fullmatch(v) or v in {".", ".."}:
            raise ValueError(
                f"source name {v!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
                "not a path, not starting with '.')"
            )
        return v


class HttpOptions(BaseModel):
    """How HTTP sources download (see pyroblur.data.download.DownloadPolicy)."""

    model_config = ConfigDict(extra="forbid")

    retries: int = Field(5, ge=0, le=50, description="Extra attempts on connection errors, timeouts, 5xx.")
    backoff_s: float = Field(
        2.0, ge=0, description="First wait before a retry, seconds; doubles each retry (max 60 s)."
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="Connect timeout, seconds.")
    read_timeout_s: float = Field(60.0, gt=0, description="Timeout between two received chunks, seconds.")
    progress: bool = Field(True, description="Show a progress bar per file.")


class _HubSource(_Source):
    """Files of a Hugging Face dataset repository, pinned to one commit.

    URLs are {endpoint}/datasets/{repo}/resolve/{revision}/{folder}/{file}. 'revision' must be a
    full commit hash unless 'allow_unpinned' is set (fail closed: a branch such as 'main' can
    serve different data next month). 'sha256' pins each file's content (the LFS object id the
    Hub shows on the file's page); a file without a pin is still checked against the sha256 the
    Hub announces when serving it (X-Linked-Etag).
    """

    endpoint: str = Field("https://huggingface.co", description="Hugging Face endpoint (or a mirror of its API).")
    repo: str = Field(description="Dataset repository, owner/name.")
    revision: str = Field(description="Commit hash (40 hex characters) the files are read at.")
    allow_unpinned: bool = Field(
        False, description="Accept a branch or tag as revision (the data may change under the same config)."
    )
    sha256: dict[str, str] = Field(
        default_factory=dict, description="File name -> sha256 of its content; a mismatch fails, naming the file."
    )
    token_env: str | None = Field(
        "HF_TOKEN", description="Environment variable whose token is sent (as Bearer) to the endpoint when set."
    )
    base_url: str | None = Field(
        None,
        description="A plain folder URL (mirror) holding the files instead of the Hub; no token is sent there.",
    )
    http: HttpOptions = Field(
        default_factory=HttpOptions, description="Retries, timeouts and progress of the downloads."
    )

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k, v in value.items() if not _SHA256.fullmatch(v.lower())]
        if bad:
            raise ValueError(f"sha256 of {bad} must be 64 hexadecimal characters")
        return {k: v.lower() for k, v in value.items()}

    @model_validator(mode="after")
    def _pinned(self) -> _HubSource:
        if self.base_url is None and not self.allow_unpinned and not _COMMIT.fullmatch(self.revision):
            raise ValueError(
                f"source {self.name!r}: revision {self.revision!r} is not a commit hash; pin the commit "
                f"(the 'Files and versions' tab of https://huggingface.co/datasets/{self.repo}, or the "
                "X-Repo-Commit header of `curl -sI <file URL>`) or set allow_unpinned: true"
            )
        return self

    def file_url(self, folder: str, name: str) -> str:
        """Where ``folder/name`` is downloaded from."""
        if self.base_url is not None:
            return f"{self.base_url.rstrip('/')}/{name}"
        return f"{self.endpoint.rstrip('/')}/datasets/{self.repo}/resolve/{self.revision}/{folder}/{name}"

    @property
    def sends_token(self) -> bool:
        """Whether downloads carry ``token_env``'s token (only to the Hub endpoint, never a mirror)."""
        return self.base_url is None and self.token_env is not None


class SyntheticSource(_Source):
    """Embedded offline generator of street-like photos with faces and license plates."""

    kind: Literal["synthetic"] = "synthetic"
    name: str = Field("synthetic", description=_NAME)
    num_images: int = Field(600, ge=1, description="Images to generate.")
    image_size: int = Field(256, ge=64, le=4096, description="Side of the square images, pixels.")
    seed: int = Field(0, description="Generator seed: same seed, same images.")
    negative_fraction: float = Field(0.1, ge=0, le=1, description="Fraction of images with neither a face nor a plate.")


class WiderFaceSource(_HubSource):
    """WIDER FACE from its Hugging Face mirror (images zips + wider_face_split.zip under data/)."""

    kind: Literal["wider_face"] = "wider_face"
    name: str = Field("wider_face", description=_NAME)
    repo: str = Field("CUHK-CSE/wider_face", description="Dataset repository on the Hub, owner/name.")
    revision: str = Field(WIDER_REVISION, description="Commit hash (40 hex characters) the files are read at.")
    sha256: dict[str, str] = Field(
        default_factory=lambda: dict(WIDER_SHA256),
        description="File name -> sha256 (defaults: the files of the pinned revision).",
    )
    splits: list[Literal["train", "val"]] = Field(
        default_factory=lambda: ["train", "val"], description="WIDER FACE splits to download."
    )
    max_images: int | None = Field(None, ge=1, description="Cap per split (None = all).")
    verify_checksums: bool = Field(
        True,
        description="Check the published sizes and sha256 of the zips; turn off only for a "
        "mirror that repackages them.",
    )


class HuggingFaceCocoSource(_HubSource):
    """COCO-JSON zips on Hugging Face, e.g. keremberke/license-plate-object-detection."""

    kind: Literal["hf_coco"] = "hf_coco"
    name: str = Field("license_plates", description=_NAME)
    repo: str = Field("keremberke/license-plate-object-detection", description="Dataset repository, owner/name.")
    revision: str = Field(
        KEREMBERKE_REVISION, description="Commit hash of the repository (or a branch with allow_unpinned: true)."
    )
    folder: str = Field("data", description="Folder of the repository holding <split>.zip.")
    splits: list[str] = Field(
        default_factory=lambda: ["train", "valid", "test"], description="Split zips to download (<folder>/<split>.zip)."
    )
    class_map: dict[str, Literal["face", "license_plate", "ignore"]] = Field(
        default_factory=lambda: {"license_plate": "license_plate"},
        description="Source category name -> our class (or 'ignore'). A name used by an "
        "annotation but missing here is an error.",
    )
    annotation_file: str = Field("_annotations.coco.json", description="Name of the COCO JSON inside each split zip.")


class RoboflowSource(_Source):
    """Roboflow Universe project, downloaded with the roboflow package (needs an API key)."""

    kind: Literal["roboflow"] = "roboflow"
    name: str = Field("roboflow_plates", description=_NAME)
    workspace: str = Field("roboflow-universe-projects", description="Roboflow workspace of the project.")
    project: str = Field("license-plate-recognition-rxg4e", description="Roboflow project name.")
    version: int = Field(4, ge=1, description="Version of the project's dataset.")
    api_key_env: str = Field("ROBOFLOW_API_KEY", description="Environment variable holding the key.")
    api_key_secret_block: str | None = Field(
        None, description="Name of a Prefect Secret block holding the key (used when set)."
    )
    class_map: dict[str, Literal["face", "license_plate", "ignore"]] = Field(
        default_factory=lambda: {"License_Plate": "license_plate", "license_plate": "license_plate"},
        description="Class name from the export's data.yaml -> our class (or 'ignore').",
    )
    export_format: Literal[
        "yolov11", "yolov12", "yolov8", "yolov9", "yolov5pytorch", "yolov7pytorch", "mt-yolov6", "coco"
    ] = Field(
        "yolov11",
        description="Roboflow export format: a YOLO txt layout (data.yaml + <split>/images|labels) or "
        "'coco' (<split>/_annotations.coco.json); other Roboflow formats are not readable here.",
    )


class OpenImagesSource(_Source):
    """Open Images V7 through the FiftyOne zoo."""

    kind: Literal["open_images"] = "open_images"
    name: str = Field("open_images", description=_NAME)
    classes: dict[str, Literal["face", "license_plate"]] = Field(
        default_factory=lambda: {"Human face": "face", "Vehicle registration plate": "license_plate"},
        description="Open Images class label -> our class.",
    )
    split: Literal["train", "validation", "test"] = Field("train", description="Open Images split to load.")
    max_samples: int = Field(1000, ge=1, description="Most images loaded from the zoo.")
    seed: int | None = Field(0, description="Shuffle seed of the zoo's sample selection (None = no shuffle).")


class LocalFolderSource(_Source):
    """A local folder in YOLO or COCO layout."""

    kind: Literal["local"] = "local"
    path: Path = Field(description="Folder holding the dataset (read only; never modified).")
    format: Literal["yolo", "coco"] = Field(description="Layout of the folder: YOLO txt labels or COCO JSON.")
    class_map: dict[str, Literal["face", "license_plate", "ignore"]] = Field(
        description="Source class name (YOLO: name from data.yaml, or the numeric id as text) -> our class."
    )


#: The kinds, in the order of :data:`SourceConfig`'s union.
SOURCE_KINDS: tuple[str, ...] = ()

SourceConfig = Annotated[
    SyntheticSource | WiderFaceSource | HuggingFaceCocoSource | RoboflowSource | OpenImagesSource | LocalFolderSource,
    Field(discriminator="kind"),
]


def sources_schema(schema: dict[str, Any]) -> None:
    """The ``sources`` list's JSON schema: an ``anyOf`` of the kinds (see :func:`_kind_schema`),
    not pydantic's ``oneOf`` + ``discriminator``, which neither jsonschema nor the Prefect UI's
    form read."""
    items = schema.get("items", {})
    if "oneOf" in items:
        items["anyOf"] = items.pop("oneOf")
        items.pop("discriminator", None)


SOURCE_KINDS = tuple(m.model_fields["kind"].default for m in get_args(get_args(SourceConfig)[0]))
