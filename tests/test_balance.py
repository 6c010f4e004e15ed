from collections import Counter

import pytest

from pyroblur.curation.balance import ImageChoice, balance, split


def cands(n_face, n_plate, n_both, n_none=0):
    out = []
    for prefix, classes, n in (("f", {0}, n_face), ("p", {1}, n_plate), ("b", {0, 1}, n_both), ("n", set(), n_none)):
        out += [ImageChoice(key=f"{prefix}{i}", classes=frozenset(classes), group=f"{prefix}{i}") for i in range(n)]
    return out


def test_empty_input():
    sel = balance([], per_class=10, num_classes=2, seed=0)
    assert sel.keys == [] and sel.achieved == {0: 0, 1: 0}
    assert len(sel.warnings) == 2
    assert split([], {"train": 0.8, "val": 0.1, "test": 0.1}, 0) == {}


def test_skewed_classes_exactly_n_plates_and_deterministic():
    pool = cands(5000, 1200, 300)
    sel = balance(pool, per_class=1000, num_classes=2, seed=3)
    classes = {c.key: c.classes for c in pool}
    plates = sum(1 for k in sel.keys if 1 in classes[k])
    faces = sum(1 for k in sel.keys if 0 in classes[k])
    assert plates == 1000 == sel.achieved[1]
    assert faces == sel.achieved[0] >= 1000
    assert sel.warnings == []
    again = balance(list(reversed(pool)), per_class=1000, num_classes=2, seed=3)
    assert again.keys == sel.keys  # same seed, same selection, whatever the input order
    other = balance(pool, per_class=1000, num_classes=2, seed=4)
    assert other.keys != sel.keys


def test_images_with_both_classes_count_for_both():
    pool = cands(0, 0, 50)
    sel = balance(pool, per_class=20, num_classes=2, seed=0)
    assert len(sel.keys) == 20 and sel.achieved == {0: 20, 1: 20}


def test_fewer_available_takes_all_and_warns():
    pool = cands(100, 7, 0)
    sel = balance(pool, per_class=50, num_classes=2, seed=0, class_names=("face", "license_plate"))
    assert sel.achieved == {0: 50, 1: 7}
    assert any("license_plate" in w and "only 7" in w for w in sel.warnings)


def test_negative_fraction():
    pool = cands(40, 40, 0, n_none=100)
    sel = balance(pool, per_class=40, num_classes=2, seed=0, negative_fraction=0.25)
    assert sum(1 for k in sel.keys if k.startswith("n")) == 20


def test_split_ratios_stratified_and_groups_kept_together():
    pool = cands(400, 300, 100)
    # plant duplicate groups of 3 across classes
    grouped = [ImageChoice(c.key, c.classes, f"grp{i // 3}") for i, c in enumerate(pool)]
    assign = split(grouped, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    assert set(assign) == {c.key for c in grouped}
    by_group = {}
    for c in grouped:
        by_group.setdefault(c.group, set()).add(assign[c.key])
    assert all(len(s) == 1 for s in by_group.values())
    counts = Counter(assign.values())
    assert counts["train"] == pytest.approx(640, abs=30)
    assert counts["test"] == pytest.approx(80, abs=20)
    for cls in (0, 1):
        in_test = sum(1 for c in grouped if cls in c.classes and assign[c.key] == "test")
        assert in_test > 0
    assert split(list(reversed(grouped)), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0) == assign


def test_seed_changes_selection_but_not_counts():
    pool = cands(300, 120, 30, n_none=50)
    a = balance(pool, per_class=100, num_classes=2, seed=1, negative_fraction=0.1)
    b = balance(pool, per_class=100, num_classes=2, seed=2, negative_fraction=0.1)
    assert a.achieved == b.achieved == {0: 100, 1: 100}
    assert a.keys != b.keys


def test_rarest_class_first_prefers_images_that_do_not_overshoot():
    # Plates are rarest: all plate images that also hold a face count towards faces, and the
    # face pass tops up with face-only images, so neither class goes past N.
    pool = cands(1000, 50, 80)
    sel = balance(pool, per_class=100, num_classes=2, seed=0)
    assert sel.achieved == {0: 100, 1: 100}


def test_negatives_fewer_than_wanted_warns():
    pool = cands(40, 40, 0, n_none=3)
    sel = balance(pool, per_class=40, num_classes=2, seed=0, negative_fraction=0.5)
    assert sum(1 for k in sel.keys if k.startswith("n")) == 3
    assert any("without labels" in w for w in sel.warnings)


def test_split_is_deterministic_and_every_split_gets_each_class():
    pool = cands(50, 50, 10)
    ratios = {"train": 0.8, "val": 0.1, "test": 0.1}
    a = split(pool, ratios, seed=5)
    assert a == split(pool, ratios, seed=5)
    assert a != split(pool, ratios, seed=6)
    for cls in (0, 1):
        assert {a[c.key] for c in pool if cls in c.classes} == {"train", "val", "test"}


def test_one_big_group_goes_to_one_split():
    pool = [ImageChoice(key=f"k{i}", classes=frozenset({0}), group="same") for i in range(30)]
    assert len(set(split(pool, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0).values())) == 1
