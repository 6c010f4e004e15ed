"""The smallest pipeline config that still runs every stage for real (seconds per stage)."""

from __future__ import annotations

import copy
from typing import Any

BASE: dict[str, Any] = {
    "name": "tiny",
    "sources": [{"kind": "synthetic", "name": "synthetic", "num_images": 60, "image_size": 96, "seed": 0}],
    "curation": {"dataset_name": "pyroblur-test-tiny"},
    # 30 per class gives 3 val and 3 test images per class: the evidence minimum is sized for that.
    "balance": {"samples_per_class": 30, "seed": 0, "min_images_per_class": {"val": 2, "test": 2}},
    "train": {
        "model": "yolo11n.yaml",
        "epochs": 1,
        "imgsz": 64,
        "batch": 8,
        "device": "cpu",
        "workers": 0,
        "args": {"plots": False},
    },
    # A 1-epoch 64 px model hides almost nothing: floors 0 so that the first model still becomes
    # champion where a test needs one (tests/test_promotion*.py test the floors themselves).
    "benchmark": {
        "device": "cpu",
        "speed_images": 3,
        "recall_floors": {"face": 0.0, "license_plate": 0.0},
        "leak_clip_images": 1,
        "leak_clip_frames": 4,
        # two small real negatives: at 64 px the default sixteen would be thousands of tiles
        "real_negatives": ["text", "coins"],
    },
}


def with_changes(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted-key changes, e.g. ``**{"sources.0.seed": 3}``."""
    cfg = copy.deepcopy(base)
    for dotted, value in changes.items():
        node: Any = cfg
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return cfg


def tiny_config(**changes: Any) -> dict[str, Any]:
    """:data:`BASE` with dotted-key changes."""
    return with_changes(BASE, **changes)
