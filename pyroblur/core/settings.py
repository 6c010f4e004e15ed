"""One place that defines paths. Everything lives under a data root that
``PYROBLUR_DATA_DIR`` can move (default: ``./data`` in the current directory).

Layout::

    <root>/raw/<source>/...          downloads and generated data, never modified in place
    <root>/indexes/<source>-<digest>.jsonl  the records a download yielded (content-addressed)
    <root>/exports/<digest>/          YOLO exports (one folder per input digest)
    <root>/runs/<digest>/             ultralytics training runs (checkpoints live here)
    <root>/reports/<digest>/          benchmark reports
    <root>/registry.json              champion/challenger model registry
    <root>/fiftyone/db/               FiftyOne's MongoDB data (unless FIFTYONE_DATABASE_URI or
                                      FIFTYONE_DATABASE_DIR says otherwise; pyroblur.core.runtime)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_DATA_DIR = "PYROBLUR_DATA_DIR"
ENV_CACHE_DIR = "PYROBLUR_CACHE_DIR"


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(Path(os.environ.get(ENV_DATA_DIR, "data")).expanduser().resolve())

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def registry(self) -> Path:
        return self.root / "registry.json"

    @property
    def fiftyone_db(self) -> Path:
        """FiftyOne's database folder (mongod's ``--dbpath``) when nothing else is configured."""
        return self.root / "fiftyone" / "db"


def get_paths() -> Paths:
    """Paths for the current environment (read each call so tests can move the root)."""
    return Paths.from_env()


def cache_dir() -> Path:
    """This machine's cache of derived files that are slow to make and safe to remake (an empty
    MLflow store, CenterFace prepared for onnxruntime): ``PYROBLUR_CACHE_DIR``, default
    ``~/.cache/pyroblur`` (read each call)."""
    return Path(os.environ.get(ENV_CACHE_DIR, Path.home() / ".cache" / "pyroblur")).expanduser()
