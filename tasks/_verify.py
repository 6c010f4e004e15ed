"""Do a cached manifest's outputs still exist as it describes them?

Manifests are plain data; this orchestration-side check calls library functions to look at what
each one names (the FiftyOne dataset's stamps, an export folder's stamp, weights, the registry),
so that a cached result is never served for outputs that were deleted or replaced.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pyroblur.core.hashing import sha256_file
from pyroblur.manifests import (
    BenchmarkManifest,
    CurateManifest,
    DownloadManifest,
    ExportManifest,
    PromotionManifest,
    SplitManifest,
    TrainManifest,
    TrialScore,
)

log = logging.getLogger(__name__)


def _stamp(dataset_name: str, stage: str) -> str | None:
    from pyroblur.curation.dataset import dataset_stamp

    return dataset_stamp(dataset_name, stage)


def outputs_intact(manifest: Any) -> bool:
    """True when everything ``manifest`` describes is still there, unchanged."""
    if isinstance(manifest, DownloadManifest):
        for src in manifest.sources:
            index = Path(src.index_path)
            if not index.exists() or sha256_file(index) != src.index_sha256:
                log.info("cache check: %s changed or is gone", index)
                return False
        return True
    if isinstance(manifest, CurateManifest):
        return _stamp(manifest.dataset_name, "curate") == manifest.digest
    if isinstance(manifest, SplitManifest):
        return _stamp(manifest.dataset_name, "split") == manifest.digest
    if isinstance(manifest, ExportManifest):
        from pyroblur.curation.export import read_stamp

        return read_stamp(Path(manifest.path)) == manifest.digest
    if isinstance(manifest, TrainManifest):
        w = Path(manifest.weights)
        return w.exists() and sha256_file(w) == manifest.digest
    if isinstance(manifest, BenchmarkManifest):
        if not (Path(manifest.report_json).exists() and Path(manifest.weights).exists()):
            return False
        if manifest.dataset_name:  # the predictions and TP/FP/FN must still be in the dataset
            # one stamp per benchmark's own field: another config's benchmark leaves this one valid
            stage = f"benchmark:{manifest.predictions_field}" if manifest.predictions_field else "benchmark"
            return _stamp(manifest.dataset_name, stage) == manifest.digest
        return True
    if isinstance(manifest, PromotionManifest):
        from pyroblur.registry.store import load_registry

        path = Path(manifest.registry)
        try:
            return load_registry(path).get(manifest.digest) is not None
        except Exception:  # noqa: BLE001 - an unreadable registry means the record is stale
            return False
    if isinstance(manifest, TrialScore):
        return True  # figures only, keyed on the weights' digest: nothing on disk to lose
    log.warning("cache check: no output check for %s; treating it as stale", type(manifest).__name__)
    return False
