"""Pure class balancing and leak-free splitting over plain records (no FiftyOne here).

"N samples per class" means N images that contain at least one instance of the class, chosen
greedily rarest class first with a fixed seed; an image with both classes counts for both.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pyroblur.core.errors import PermanentError
from pyroblur.manifests import Evidence

log = logging.getLogger(__name__)


class InsufficientEvidenceError(PermanentError):
    """A held-out split has fewer images of a class than the configured minimum."""


@dataclass(frozen=True)
class ImageChoice:
    """One curated image: ``key`` is stable (content sha256), ``group`` its duplicate group."""

    key: str
    classes: frozenset[int]
    group: str


@dataclass
class Selection:
    keys: list[str]
    achieved: dict[int, int]
    warnings: list[str]


def _order(keys: list[str], seed: int, salt: str) -> list[str]:
    """Deterministic pseudo-random order that does not depend on input order."""
    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{salt}:{k}".encode()).hexdigest())


def balance(
    candidates: list[ImageChoice],
    per_class: int,
    num_classes: int,
    seed: int,
    negative_fraction: float = 0.0,
    class_names: tuple[str, ...] | None = None,
) -> Selection:
    """Pick up to ``per_class`` images containing each class, rarest class first.

    Returns the selected keys (sorted), the achieved images-per-class, and warnings for
    classes with fewer images available than requested (all of them are then taken).
    """
    names = class_names or tuple(str(c) for c in range(num_classes))
    by_class: dict[int, list[str]] = defaultdict(list)
    classes_of = {c.key: c.classes for c in candidates}
    for c in candidates:
        for cls in c.classes:
            by_class[cls].append(c.key)
    chosen: set[str] = set()
    achieved = dict.fromkeys(range(num_classes), 0)
    warnings: list[str] = []
    done: set[int] = set()
    for cls in sorted(range(num_classes), key=lambda k: (len(by_class[k]), k)):
        have = sum(1 for k in chosen if cls in classes_of[k])
        pool = [k for k in _order(by_class[cls], seed, f"class{cls}") if k not in chosen]
        # Images that also hold an already-filled class would push it past N: use them last.
        pool.sort(key=lambda k: bool(classes_of[k] & done))
        done.add(cls)
        take = pool[: max(0, per_class - have)]
        chosen.update(take)
        achieved[cls] = have + len(take)
        if len(by_class[cls]) < per_class:
            warnings.append(
                f"class '{names[cls]}': only {len(by_class[cls])} images available, "
                f"fewer than the {per_class} requested; all of them were taken"
            )
    # Images chosen for one class may contain the other: recount once all classes are in.
    achieved = {cls: sum(1 for k in chosen if cls in classes_of[k]) for cls in range(num_classes)}
    if negative_fraction > 0:
        negatives = _order([c.key for c in candidates if not c.classes], seed, "neg")
        want = int(round(negative_fraction * len(chosen)))
        if len(negatives) < want:
            warnings.append(f"only {len(negatives)} images without labels, {want} wanted as negatives")
        chosen.update(negatives[:want])
    for w in warnings:
        log.warning(w)
    return Selection(sorted(chosen), achieved, warnings)


def split(candidates: list[ImageChoice], ratios: dict[str, float], seed: int) -> dict[str, str]:
    """Assign each candidate key to a split; whole duplicate groups go to one split.

    Groups are stratified by their class signature (which classes they contain) and, within a
    stratum, ordered by a seeded hash and cut at the cumulative ratios, so the result does not
    depend on input order and classes are spread over all splits.
    """
    groups: dict[str, list[ImageChoice]] = defaultdict(list)
    for c in candidates:
        groups[c.group].append(c)
    strata: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for gid, members in groups.items():
        sig = tuple(sorted(set().union(*(m.classes for m in members))))
        strata[sig].append(gid)
    names = list(ratios)
    bounds = np.cumsum([ratios[n] for n in names])
    out: dict[str, str] = {}
    for sig, gids in sorted(strata.items()):
        ordered = _order(gids, seed, f"split{sig}")
        n = len(ordered)
        for i, gid in enumerate(ordered):
            # (i + 0.5) / n places each group at the centre of its slot: small strata still
            # reach every split whose share is at least one group.
            pos = (i + 0.5) / n
            name = names[min(int(np.searchsorted(bounds, pos, side="right")), len(names) - 1)]
            for m in groups[gid]:
                out[m.key] = name
    return out


def check_evidence(
    counts: Mapping[str, Mapping[str, int]],
    minimums: Mapping[str, int],
    allow: bool = False,
    setting: str = "balance.min_images_per_class",
) -> Evidence:
    """Compare the held-out images per class with their minimum; fail closed below it.

    Args:
        counts: ``split -> class name -> images containing that class``.
        minimums: ``split -> minimum`` (splits without a minimum are not checked).
        allow: below a minimum, warn and go on instead of raising (the evidence then records the
            shortfall and promotion refuses the model).
        setting: the config key named in the messages.

    Raises:
        InsufficientEvidenceError: a split holds fewer images of a class than its minimum and
            ``allow`` is false; the message names every such split, class and count.
    """
    shortfalls = [
        f"split '{split_name}' has {counts.get(split_name, {}).get(cls, 0)} images containing '{cls}', "
        f"below {setting}.{split_name} = {minimum}"
        for split_name, minimum in minimums.items()
        for cls in sorted({c for per in counts.values() for c in per} | set(counts.get(split_name, {})))
        if counts.get(split_name, {}).get(cls, 0) < minimum
    ]
    evidence = Evidence(
        counts={s: dict(per) for s, per in counts.items()},
        minimums=dict(minimums),
        setting=setting,
        allowed=allow,
        shortfalls=shortfalls,
    )
    if shortfalls and not allow:
        raise InsufficientEvidenceError(
            "not enough held-out evidence to train and judge a model: " + "; ".join(shortfalls),
            subject=setting,
            hint="add data, raise balance.samples_per_class, lower the minimum, or set "
            "balance.allow_small_evidence: true to train anyway (such a model is never promoted)",
        )
    for s in shortfalls:
        log.warning("%s (allowed by balance.allow_small_evidence; this model will not be promoted)", s)
    return evidence
