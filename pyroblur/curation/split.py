"""Balance the curated samples to N images per class and split them train/val/test without
leakage (near-duplicate groups stay in one split); the selection is written as tags."""

from __future__ import annotations

import logging
from collections import Counter

from pyroblur import CLASSES
from pyroblur.config import BalanceConfig, SplitConfig
from pyroblur.curation.balance import ImageChoice, balance, check_evidence, split
from pyroblur.curation.dataset import SPLITS, load_dataset, set_stamp, tag_split
from pyroblur.curation.oversample import train_shortfall
from pyroblur.manifests import SplitManifest

log = logging.getLogger(__name__)


def balance_and_split(
    dataset_name: str, bal: BalanceConfig, spl: SplitConfig, digest: str, corrections: str | None = None
) -> SplitManifest:
    """Select ``bal.samples_per_class`` images per class and tag them train/val/test.

    Candidates are the ``curated`` samples; an image's classes are those of its kept boxes.
    Near-duplicate groups go to one split as a whole (``dup_group``).

    Raises:
        InsufficientEvidenceError: val or test holds fewer images of a class than
            ``bal.min_images_per_class`` and ``bal.allow_small_evidence`` is off.
    """
    ds = load_dataset(dataset_name)
    set_stamp(ds, "split", None)
    view = ds.match_tags("curated")
    ids, shas, groups, labels, sources, source_splits = view.values(
        ["id", "sha256", "dup_group", "ground_truth.detections.label", "source", "source_split"]
    )
    # Held-out source splits (external suites) stay out, with every near-duplicate of theirs.
    held = {(h.source, h.split) for h in bal.hold_out}
    rows = list(zip(ids, shas, groups, labels, sources, source_splits, strict=True))
    held_groups = {grp or sha for _, sha, grp, _, src, ss in rows if (src, ss) in held}
    held_out = Counter(f"{src}/{ss}" for _, sha, grp, _, src, ss in rows if (grp or sha) in held_groups)
    if held:
        log.info("held out of the selection (external suites, with their duplicates): %s", dict(held_out))
    cands = []
    key_to_id = {}
    instances_of: dict[str, Counter] = {}
    for sid, sha, grp, labs, _, _ in rows:
        if (grp or sha) in held_groups:
            continue
        labs = labs or []
        cls = frozenset(CLASSES.index(lb) for lb in labs if lb in CLASSES)
        cands.append(ImageChoice(key=sha, classes=cls, group=grp or sha))
        key_to_id[sha] = sid
        instances_of[sha] = Counter(labs)
    sel = balance(cands, bal.samples_per_class, len(CLASSES), bal.seed, bal.negative_fraction, CLASSES)
    chosen = set(sel.keys)
    assign = split([c for c in cands if c.key in chosen], spl.model_dump(), bal.seed)

    per_split: dict[str, dict[str, int]] = {s: dict.fromkeys(CLASSES, 0) for s in SPLITS}
    images = dict.fromkeys(SPLITS, 0)
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    cls_of = {c.key: c.classes for c in cands}
    for key, s in assign.items():
        by_split[s].append(key_to_id[key])
        images[s] += 1
        for c in cls_of[key]:
            per_split[s][CLASSES[c]] += 1
    log.info("images per split and class: %s", per_split)
    # Before any tag is written: a selection too small to judge a model stops here, named.
    evidence = check_evidence(
        {s: per_split[s] for s in ("val", "test")}, bal.min_images_per_class, bal.allow_small_evidence
    )
    tag_split(ds, [key_to_id[k] for k in sel.keys], by_split)
    instances: Counter = Counter()
    for k in sel.keys:
        instances.update(instances_of[k])
    set_stamp(ds, "split", digest)
    log.info("selected %d images; per class %s; per split %s", len(sel.keys), sel.achieved, images)
    achieved = {CLASSES[c]: n for c, n in sel.achieved.items()}
    oversample = (
        train_shortfall(achieved, per_split["train"], bal.samples_per_class, spl.train) if bal.oversample else {}
    )
    if oversample:
        log.info("oversampling (augmented training copies): %s", oversample)
    return SplitManifest(
        digest=digest,
        dataset_name=dataset_name,
        images=images,
        per_class=per_split,
        instances={c: int(instances.get(c, 0)) for c in CLASSES},
        achieved=achieved,
        requested=bal.samples_per_class,
        warnings=[*sel.warnings, *evidence.shortfalls],
        evidence=evidence,
        held_out=dict(held_out),
        corrections=corrections,
        oversample=oversample,
    )
