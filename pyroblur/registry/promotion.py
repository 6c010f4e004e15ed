"""Promotion policy: the gates a candidate must pass before it blurs anyone's data.

The champion is the model that anonymization uses by default, so promotion fails closed. A
candidate becomes champion only when every gate passes:

* ``improvement``: strictly better than the champion on the primary metric, by at least
  ``benchmark.min_improvement`` (decided by :func:`pyroblur.registry.store.promote_if_better`
  under the registry lock; a tie is never better);
* ``evidence:<split>/<class>``: the val and test splits held at least
  ``balance.min_images_per_class`` images of each class (test counts are the images actually
  scored; a run let through by ``balance.allow_small_evidence`` fails here);
* ``recall_floor:<class>``: at anonymization's operating point (its per-class confidence
  thresholds and box enlargement), the fraction of test boxes the anonymized region covers is at
  least ``benchmark.recall_floors[class]``.

* ``background_damage:<set>``: at the same operating point, the mean share of the far
  background (outside every ground-truth box grown 2x) that the model hides, on the test split
  and on real negatives that ship with scikit-image, is at most ``benchmark.max_background_damage``.
  A model that boxes the whole image passes every recall floor; this gate refuses it, the first
  model included (the ``improvement`` gate lets any first model through, this one does not).

* ``real_faces:<suite>`` (only when ``benchmark.real_face_floor`` is set): WIDER FACE Medium AP
  on the official files (a fabricated suite or one that overlaps training does not count) at
  least the floor. A champion that passed it finds faces alone in ``pyroblur anonymize``; any
  other runs in the union with CenterFace (:func:`pyroblur.anonymize.models.choose_face_detector`).

A value that could not be measured fails its gate. Every gate, with its value, bar and verdict,
goes into the log, the report artifact and the registry entry (with the test-set digest).

A promoted model is also exported to ONNX (:mod:`pyroblur.registry.export`) when the caller
gives its training size, so that anonymization on a CPU runs without torch; a failed export
is a warning, never a failed promotion.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from pyroblur import CLASSES
from pyroblur.manifests import BenchmarkManifest, Evidence, Gate, PromotionManifest
from pyroblur.registry.export import export_champion_onnx
from pyroblur.registry.store import (
    Candidate,
    Decision,
    ModelEntry,
    load_registry,
    promote_if_better,
    verified_weights,
)

logger = logging.getLogger(__name__)

#: The held-out splits whose size is gated.
EVIDENCE_SPLITS = ("val", "test")


def evidence_gates(report: BenchmarkManifest, evidence: Evidence | None) -> list[Gate]:
    """One gate per held-out split and class: images containing the class >= the minimum.

    Test counts come from the benchmark (the images the metrics were computed on), val counts
    from the split's evidence record. Without a record there is no minimum to check against,
    which fails every evidence gate.
    """
    if evidence is None:
        return [
            Gate(
                name="evidence",
                value=None,
                threshold=None,
                passed=False,
                detail="the dataset carries no evidence record (balance.min_images_per_class was not checked)",
            )
        ]
    gates = []
    for split in EVIDENCE_SPLITS:
        minimum = evidence.minimums.get(split)
        if minimum is None:
            continue
        for cls in CLASSES:
            if split == "test" and cls in report.per_class:
                count = report.per_class[cls].images
            else:
                count = evidence.counts.get(split, {}).get(cls, 0)
            passed = count >= minimum
            gates.append(
                Gate(
                    name=f"evidence:{split}/{cls}",
                    value=float(count),
                    threshold=float(minimum),
                    passed=passed,
                    detail=f"{split} has {count} images containing {cls} "
                    f"({'>=' if passed else '<'} {evidence.setting}.{split} = {minimum})",
                )
            )
    return gates


def recall_floor_gates(report: BenchmarkManifest, floors: Mapping[str, float]) -> list[Gate]:
    """One gate per class with a floor: coverage at the operating point >= the floor."""
    op = report.operating_point
    where = (
        f"at conf {op.conf}, enlarge {op.enlarge}, covered = {op.covered_fraction:.0%} of a box's pixels hidden"
        if op
        else "no operating point recorded"
    )
    gates = []
    for cls, floor in floors.items():
        privacy = report.privacy.get(cls)
        value = privacy.coverage if privacy is not None else None
        passed = value is not None and value >= floor
        shown = "not measured" if value is None else f"{value:.4f}"
        gates.append(
            Gate(
                name=f"recall_floor:{cls}",
                value=value,
                threshold=float(floor),
                passed=passed,
                detail=f"{cls} coverage {shown} {'>=' if passed else 'below'} benchmark.recall_floors.{cls} = "
                f"{floor:.4f} ({where})",
            )
        )
    return gates


#: The sets whose background damage is gated: our test split and pictures we did not make.
DAMAGE_SETS = ("test", "real_negatives")


def background_damage_gates(report: BenchmarkManifest, cap: float) -> list[Gate]:
    """One gate per set of :data:`DAMAGE_SETS`: mean far-background share hidden <= ``cap``.
    A set that was not measured fails (fail closed)."""
    gates = []
    for name in DAMAGE_SETS:
        d = report.background_damage.get(name)
        value = d.mean if d is not None else None
        passed = value is not None and value <= cap
        if value is None:
            detail = f"background damage on {name} not measured: the gate fails closed"
        else:
            detail = (
                f"{name}: {value:.4f} of the far background hidden on average over {d.images} images "
                f"(worst {d.worst:.4f}, {d.worst_image}) {'<=' if passed else 'above'} "
                f"benchmark.max_background_damage = {cap:.4f}"
            )
        gates.append(
            Gate(name=f"background_damage:{name}", value=value, threshold=float(cap), passed=passed, detail=detail)
        )
    return gates


def real_face_gates(report: BenchmarkManifest, floor: float | None) -> list[Gate]:
    """The ``real_faces`` gate when ``floor`` is set: WIDER Medium AP on real files >= ``floor``."""
    if floor is None:
        return []
    w = report.wider
    name = f"real_faces:{w.name}" if w is not None else "real_faces"
    if w is None or w.fabricated or w.in_training:
        why = (
            "no WIDER FACE suite was scored"
            if w is None
            else "the suite is fabricated (not real faces)"
            if w.fabricated
            else f"{w.in_training} suite images were training/validation images"
        )
        return [Gate(name=name, value=None, threshold=float(floor), passed=False, detail=f"{why}: fails closed")]
    passed = w.medium >= floor
    detail = (
        f"WIDER FACE Medium AP {w.medium:.4f} on {w.images} real images {'>=' if passed else 'below'} "
        f"benchmark.real_face_floor = {floor:.4f}"
    )
    return [Gate(name=name, value=float(w.medium), threshold=float(floor), passed=passed, detail=detail)]


def champion_to_remeasure(registry: Path, data_digest: str) -> tuple[ModelEntry, Path] | None:
    """The champion and its weights when its stored metrics come from other test data.

    Stored numbers from another test set are not comparable, so the caller re-benchmarks the
    champion on this run's test split and passes its metrics to :func:`decide`.
    """
    champ = load_registry(registry).champion()
    if champ is None or champ.data_digest == data_digest:
        return None
    return champ, verified_weights(registry, champ)


def decide(
    registry: Path,
    report: BenchmarkManifest,
    metrics: Mapping[str, float],
    data_digest: str,
    evidence: Evidence | None,
    primary_metric: str,
    min_improvement: float,
    recall_floors: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None = None,
    onnx_imgsz: int | None = None,
    max_background_damage: float | None = None,
    real_face_floor: float | None = None,
) -> Decision:
    """Measure the gates and register the candidate; it is champion only if all pass.

    A champion (new, or the same weights offered again by a retry) is then exported to ONNX at
    ``onnx_imgsz`` and the export recorded in its entry, unless ``onnx_imgsz`` is ``None``.

    Args:
        registry: the registry JSON file.
        report: the candidate's benchmark (per-class counts, coverage, test digest).
        metrics: the candidate's flat metrics (must hold ``primary_metric``).
        data_digest: digest of the exported dataset the candidate was scored on.
        evidence: the split's evidence record (``None`` fails the evidence gate).
        primary_metric, min_improvement: the ``improvement`` gate's metric and margin.
        recall_floors: class -> minimum coverage at the operating point.
        champion_metrics: the champion re-measured on this test split, when its stored
            metrics come from other data.
        onnx_imgsz: the candidate's training input size, to export it at when promoted.
        max_background_damage: the cap of :func:`background_damage_gates` (``None``: no such
            gate; the pipeline always passes ``benchmark.max_background_damage``).
        real_face_floor: the floor of :func:`real_face_gates` (``None``: no such gate).
    """
    gates = [*evidence_gates(report, evidence), *recall_floor_gates(report, recall_floors)]
    if max_background_damage is not None:
        gates += background_damage_gates(report, max_background_damage)
    gates += real_face_gates(report, real_face_floor)
    decision = promote_if_better(
        registry,
        Candidate(
            weights=Path(report.weights),
            metrics=dict(metrics),
            data_digest=data_digest,
            test_digest=report.test_digest,
            report=report.report_json,
        ),
        primary_metric,
        min_improvement,
        champion_metrics=champion_metrics,
        gates=gates,
    )
    if decision.promoted and onnx_imgsz:
        export_champion_onnx(registry, decision.candidate_id, onnx_imgsz)
    return decision


def to_manifest(decision: Decision, registry: Path, test_digest: str) -> PromotionManifest:
    """The small result the promote task returns."""
    return PromotionManifest(
        digest=decision.candidate_id,
        registry=str(registry),
        promoted=decision.promoted,
        reason=decision.reason,
        primary_metric=decision.primary_metric,
        candidate_value=decision.candidate_value,
        champion_id=decision.champion_id,
        champion_value=decision.champion_value,
        gates=list(decision.gates),
        test_digest=test_digest,
    )


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def to_markdown(m: PromotionManifest) -> str:
    """The decision as markdown: both models, then every gate with its value, bar and verdict."""
    rows = [
        "# Champion / challenger",
        "",
        f"| | model | {m.primary_metric} |",
        "|---|---|---:|",
        f"| challenger | `{m.digest}` | {m.candidate_value:.4f} |",
        f"| champion before | `{m.champion_id or '-'}` | {_num(m.champion_value)} |",
        "",
        f"**{'Promoted' if m.promoted else 'Not promoted'}**: {m.reason}",
        "",
        f"Test set digest: `{m.test_digest or '-'}`",
        "",
        "| gate | value | bar | verdict | detail |",
        "|---|---:|---:|---|---|",
    ]
    rows += [
        f"| {g.name} | {_num(g.value)} | {_num(g.threshold)} | {'pass' if g.passed else '**FAIL**'} | "
        f"{g.detail.replace('|', '/')} |"
        for g in m.gates
    ]
    return "\n".join(rows) + "\n"
