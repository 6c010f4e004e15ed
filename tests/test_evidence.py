"""Evidence minimums: val/test below the configured images per class fail closed, named."""

from __future__ import annotations

import logging

import pytest

from pyroblur.config import BalanceConfig
from pyroblur.curation.balance import InsufficientEvidenceError, check_evidence

MIN = {"val": 20, "test": 20}


def test_enough_evidence_passes_without_shortfalls() -> None:
    counts = {"val": {"face": 20, "license_plate": 31}, "test": {"face": 25, "license_plate": 20}}
    ev = check_evidence(counts, MIN)
    assert ev.shortfalls == [] and ev.minimums == MIN and ev.counts == counts


def test_shortfall_names_split_class_count_and_setting() -> None:
    counts = {"val": {"face": 0, "license_plate": 0}, "test": {"face": 1, "license_plate": 0}}
    with pytest.raises(InsufficientEvidenceError) as err:
        check_evidence(counts, MIN)
    text = str(err.value)
    assert "split 'val' has 0 images containing 'face'" in text
    assert "split 'test' has 1 images containing 'face'" in text
    assert "balance.min_images_per_class.test = 20" in text
    assert "allow_small_evidence" in text  # the hint says how to go on anyway
    assert err.value.exit_code == 1 and not err.value.transient


def test_allowed_shortfall_warns_and_is_recorded(caplog: pytest.LogCaptureFixture) -> None:
    counts = {"val": {"face": 30, "license_plate": 30}, "test": {"face": 30, "license_plate": 19}}
    with caplog.at_level(logging.WARNING, logger="pyroblur.curation.balance"):
        ev = check_evidence(counts, MIN, allow=True)
    assert ev.allowed and len(ev.shortfalls) == 1
    assert "'test' has 19 images containing 'license_plate'" in ev.shortfalls[0]
    assert "will not be promoted" in caplog.text


def test_a_class_missing_from_a_split_counts_as_zero() -> None:
    with pytest.raises(InsufficientEvidenceError, match="split 'val' has 0 images containing 'license_plate'"):
        check_evidence({"val": {"face": 50}, "test": {"face": 50, "license_plate": 50}}, MIN)


def test_real_default_is_sized_for_1000_per_class() -> None:
    cfg = BalanceConfig()
    assert cfg.samples_per_class == 1000 and cfg.min_images_per_class == {"val": 80, "test": 80}
    assert not cfg.allow_small_evidence
    with pytest.raises(ValueError, match=">= 0"):
        BalanceConfig(min_images_per_class={"val": -1, "test": 0})


def test_a_benchmark_suite_must_be_held_out_of_training() -> None:
    from pyroblur.config import parse_config

    suites = {"suites": [{"name": "plates_test", "source": "plates", "split": "test"}]}
    with pytest.raises(ValueError, match=r"plates_test.*balance.hold_out"):
        parse_config({"benchmark": suites})
    cfg = parse_config({"benchmark": suites, "balance": {"hold_out": [{"source": "plates", "split": "test"}]}})
    assert cfg.benchmark.suites[0].name == "plates_test"


def test_real_config_holds_out_its_external_suites() -> None:
    from pathlib import Path

    from pyroblur.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "pyroblur.yaml")
    held = {(h.source, h.split) for h in cfg.balance.hold_out}
    assert ("wider_face", "val") in held and ("license_plates", "test") in held
    assert cfg.benchmark.wider is not None and cfg.benchmark.wider.eval_tools_sha256
