"""A sweep trial's objective, measured with the benchmark's own code on the val split.

Recall first, as the promotion gates are: the coverage of each class at anonymization's
operating point (:func:`pyroblur.evaluation.benchmark.privacy_report`, the figure the
``recall_floor`` gates compare), its worst class, with the mean mAP50-95 over the classes
(:func:`pyroblur.evaluation.benchmark.score`) as a tie-breaker
(:func:`pyroblur.training.sweep.objective_value`).

On the val split, not the test split: the sweep chooses among trials with it, and the test
split stays unseen until the chosen trial goes through the benchmark and the promotion gates.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyroblur.config import BenchmarkConfig
from pyroblur.core.devices import resolve_device
from pyroblur.core.hashing import digest_of, sha256_file
from pyroblur.evaluation.benchmark import _mean, load_yolo_split, predict, privacy_report, score, test_set_digest
from pyroblur.manifests import TrialScore
from pyroblur.training.sweep import objective_value

log = logging.getLogger(__name__)


def trial_objective(weights: Path, data_yaml: Path, imgsz: int, cfg: BenchmarkConfig, split: str = "val") -> TrialScore:
    """Score ``weights`` on ``split`` of ``data_yaml`` (see the module docstring).

    A class without boxes in the split has no coverage and does not count; with no boxes at
    all the coverage is 0 (fails closed).
    """
    device = resolve_device(cfg.device)
    data = load_yolo_split(Path(data_yaml), split)
    preds = predict(weights, data.images, imgsz, device, cfg.conf, cfg.iou, half=device != "cpu")
    per_class, _ = score(data.gt, preds)
    map50_95 = _mean([c.map50_95 for c in per_class.values() if c.instances])
    # the operating point's coverage only: the moving clip's leak counts are the benchmark's
    _, privacy = privacy_report(Path(weights), data, device, cfg.model_copy(update={"leak_clip_images": 0}))
    coverage = {name: p.coverage for name, p in privacy.items()}
    measured = [c for c in coverage.values() if c is not None]
    worst = min(measured) if measured else 0.0
    value = objective_value(worst, map50_95)
    log.info("trial objective on %s (%d images): coverage %s, mAP50-95 %.4f -> %.6f", split, len(data.images),
             coverage, map50_95, value)  # fmt: skip
    return TrialScore(
        digest=digest_of(sha256_file(Path(weights)), test_set_digest(data), cfg.model_dump(mode="json"), split),
        value=value,
        coverage=coverage,
        worst_coverage=worst,
        map50_95=map50_95,
        split=split,
        images=len(data.images),
    )
