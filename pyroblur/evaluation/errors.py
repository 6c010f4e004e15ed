"""Error analysis of a benchmark: where the model fails, shown before it is counted.

At anonymization's operating point (per-class confidence thresholds), predictions are matched
to ground truth greedily by confidence at IoU >= 0.5, once per class (errors by class, size
bucket and WIDER attribute) and once ignoring the class (the confusion summary: face vs
license plate vs background). ``errors.html`` opens with a gallery of the worst cases (largest
missed objects, most confident false positives, class confusions) as crops with the true boxes
in green and the predicted boxes in red, then the tables.
"""

from __future__ import annotations

import html
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyroblur import CLASSES
from pyroblur.core.boxes import box_iou
from pyroblur.core.detections import Detections
from pyroblur.evaluation.metrics import WIDER_FACE_HEIGHT_BUCKETS

log = logging.getLogger(__name__)

#: WIDER FACE attributes reported when the ground truth carries them.
ATTRIBUTES = ("blur", "occlusion", "pose", "illumination")
BACKGROUND = "background"
_IOU = 0.5


@dataclass(frozen=True)
class Case:
    """One error: image index, kind (``missed``, ``false positive``, ``confused``), the box in
    pixels, its class name and a severity (box height for misses, confidence otherwise)."""

    image: int
    kind: str
    xyxy: tuple[float, float, float, float]
    label: str
    severity: float


@dataclass
class ErrorAnalysis:
    """Counts per class, size bucket and attribute value, the confusion matrix and the cases."""

    by_class: dict[str, Counter] = field(default_factory=dict)  # class -> gt/tp/fn/fp
    by_size: dict[str, dict[str, Counter]] = field(default_factory=dict)  # class -> bucket -> gt/fn
    by_attribute: dict[str, dict[str, Counter]] = field(default_factory=dict)  # attr -> value -> gt/fn
    confusion: dict[str, Counter] = field(default_factory=dict)  # true -> predicted -> count
    cases: list[Case] = field(default_factory=list)


def _greedy(iou: np.ndarray, order: np.ndarray) -> dict[int, int]:
    """pred index -> gt index, predictions taken in ``order`` (by confidence), IoU >= 0.5."""
    taken: set[int] = set()
    out = {}
    for p in order:
        if iou.shape[0] == 0:
            break
        cands = [(iou[g, p], g) for g in range(iou.shape[0]) if g not in taken and iou[g, p] >= _IOU]
        if cands:
            g = max(cands)[1]
            taken.add(g)
            out[int(p)] = g
    return out


def _bucket(height: float) -> str:
    return next(n for n, (lo, hi) in WIDER_FACE_HEIGHT_BUCKETS.items() if lo <= height < hi)


def analyze_errors(
    gt: list[Detections],
    preds: list[Detections],
    conf: dict[str, float],
    attributes: list[list[dict]] | None = None,
) -> ErrorAnalysis:
    """Errors of ``preds`` against ``gt`` (pixels, per image) at per-class thresholds ``conf``.

    ``attributes``: per image, one dict per ground-truth box (WIDER flags such as ``blur``);
    an image whose list does not match its boxes is left out of the attribute table.
    """
    a = ErrorAnalysis(
        by_class={c: Counter() for c in CLASSES},
        by_size={c: {b: Counter() for b in WIDER_FACE_HEIGHT_BUCKETS} for c in CLASSES},
        confusion={c: Counter() for c in (*CLASSES, BACKGROUND)},
    )
    for i, (g, p) in enumerate(zip(gt, preds, strict=True)):
        thr = np.array([conf.get(CLASSES[int(c)], 0.25) for c in p.class_id], np.float64)
        p = p.filter(p.confidence >= thr) if len(p) else p
        order = np.argsort(-p.confidence, kind="stable")
        iou = box_iou(g.xyxy, p.xyxy)
        # Per class: TP, FN, FP.
        found = np.zeros(len(g), bool)
        explained = np.zeros(len(p), bool)
        for c, name in enumerate(CLASSES):
            gi, pi = np.flatnonzero(g.class_id == c), np.flatnonzero(p.class_id == c)
            sub = iou[np.ix_(gi, pi)]
            m = _greedy(sub, np.argsort(-p.confidence[pi], kind="stable"))
            for pj, gj in m.items():
                found[gi[gj]] = True
                explained[pi[pj]] = True
            a.by_class[name].update(gt=len(gi), tp=len(m), fn=len(gi) - len(m), fp=len(pi) - len(m))
        attrs = attributes[i] if attributes is not None and len(attributes[i]) == len(g) else None
        for k in range(len(g)):
            name = CLASSES[int(g.class_id[k])]
            h = float(g.xyxy[k, 3] - g.xyxy[k, 1])
            a.by_size[name][_bucket(h)].update(gt=1, fn=int(not found[k]))
            for attr, value in (attrs[k] if attrs else {}).items():
                if attr in ATTRIBUTES and value is not None:
                    a.by_attribute.setdefault(attr, {}).setdefault(str(value), Counter()).update(
                        gt=1, fn=int(not found[k])
                    )
        # Ignoring the class: what each true object was taken for, and what fired on nothing.
        m = _greedy(iou, order)
        matched_gt = set(m.values())
        for pj, gj in m.items():
            t, q = CLASSES[int(g.class_id[gj])], CLASSES[int(p.class_id[pj])]
            a.confusion[t][q] += 1
            if t != q:
                a.cases.append(Case(i, "confused", tuple(p.xyxy[pj]), f"{t} taken for {q}", float(p.confidence[pj])))
        for k in range(len(g)):
            if k not in matched_gt:
                a.confusion[CLASSES[int(g.class_id[k])]][BACKGROUND] += 1
        for k in range(len(g)):
            if not found[k]:
                h = float(g.xyxy[k, 3] - g.xyxy[k, 1])
                a.cases.append(Case(i, "missed", tuple(g.xyxy[k]), CLASSES[int(g.class_id[k])], h))
        for pj in range(len(p)):
            if pj not in m:
                a.confusion[BACKGROUND][CLASSES[int(p.class_id[pj])]] += 1
                a.cases.append(
                    Case(i, "false positive", tuple(p.xyxy[pj]), CLASSES[int(p.class_id[pj])], float(p.confidence[pj]))
                )
    return a


def worst_cases(a: ErrorAnalysis, n: int) -> list[Case]:
    """Up to ``n`` cases, the worst of each kind in turn: largest misses, most confident false
    positives and confusions."""
    kinds = ("missed", "false positive", "confused")
    ranked = {k: sorted((c for c in a.cases if c.kind == k), key=lambda c: -c.severity) for k in kinds}
    out: list[Case] = []
    while len(out) < n and any(ranked.values()):
        for k in kinds:
            if ranked[k] and len(out) < n:
                out.append(ranked[k].pop(0))
    return out


def _crop(image: np.ndarray, case: Case, gt: Detections, pred: Detections, height: int = 200) -> np.ndarray:
    """The region around ``case`` (3x the box, at least 96 px) with every true box (green) and
    predicted box (red, with its confidence) drawn; the case's own box is thicker."""
    import cv2

    h, w = image.shape[:2]
    x1, y1, x2, y2 = case.xyxy
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(48.0, 1.5 * max(x2 - x1, y2 - y1))
    X1, Y1 = int(max(0, cx - half)), int(max(0, cy - half))
    X2, Y2 = int(min(w, cx + half)), int(min(h, cy + half))
    scale = height / max(1, Y2 - Y1)
    crop = cv2.resize(image[Y1:Y2, X1:X2], (max(1, round((X2 - X1) * scale)), height))

    def draw(b: np.ndarray, color: tuple[int, int, int], thick: int, text: str = "") -> None:
        p1 = (round((b[0] - X1) * scale), round((b[1] - Y1) * scale))
        p2 = (round((b[2] - X1) * scale), round((b[3] - Y1) * scale))
        cv2.rectangle(crop, p1, p2, color, thick)
        if text:
            cv2.putText(crop, text, (p1[0], max(12, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)

    for b in gt.xyxy:
        draw(b, (0, 200, 0), 3 if np.allclose(b, case.xyxy) else 1)
    for b, s in zip(pred.xyxy, pred.confidence, strict=True):
        draw(b, (0, 0, 230), 3 if np.allclose(b, case.xyxy) else 1, f"{s:.2f}")
    return crop


def _table(title: str, head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<h2>{html.escape(title)}</h2><table><tr>{th}</tr>{trs}</table>"


def _rate(c: Counter) -> str:
    return f"{c['fn'] / c['gt']:.0%}" if c["gt"] else "n/a"


def save_error_report(
    a: ErrorAnalysis,
    images: list[Path],
    gt: list[Detections],
    preds: list[Detections],
    conf: dict[str, float],
    out_dir: Path,
    gallery: int = 24,
    title: str = "Error analysis",
) -> Path:
    """Write ``out_dir/errors.html`` and its crops (``out_dir/errors/*.jpg``); returns the HTML path."""
    import cv2

    crops_dir = out_dir / "errors"
    crops_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for n, case in enumerate(worst_cases(a, gallery)):
        image = cv2.imread(str(images[case.image]), cv2.IMREAD_COLOR)
        if image is None:
            continue
        p = preds[case.image]
        thr = np.array([conf.get(CLASSES[int(c)], 0.25) for c in p.class_id], np.float64)
        crop = _crop(image, case, gt[case.image], p.filter(p.confidence >= thr) if len(p) else p)
        name = f"errors/{n:03d}.jpg"
        cv2.imwrite(str(out_dir / name), crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
        what = f"{case.kind}: {case.label}" + (
            f" ({case.severity:.0f} px high)" if case.kind == "missed" else f" (confidence {case.severity:.2f})"
        )
        figures.append(
            f'<figure class="case {case.kind.replace(" ", "-")}"><img src="{name}" alt="{html.escape(what)}">'
            f"<figcaption>{html.escape(what)}<br><small>{html.escape(images[case.image].name)}</small>"
            "</figcaption></figure>"
        )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:1.5em;background:#fafafa}"
        ".gallery{display:flex;flex-wrap:wrap;gap:10px}"
        "figure{margin:0;background:#fff;border:1px solid #ddd;padding:4px}"
        "figure img{height:200px;display:block}figcaption{font-size:13px;max-width:260px}"
        "table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}",
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Worst cases first: <span style='color:#0a0'>true boxes green</span>, "
        f"<span style='color:#e00'>predicted boxes red</span> (confidence), at the operating point {conf}.</p>",
        f'<div class="gallery" id="gallery">{"".join(figures) or "<p>No errors at the operating point.</p>"}</div>',
    ]
    parts.append(
        _table(
            "Errors by class",
            ["class", "boxes", "found", "missed", "false positives", "miss rate"],
            [[c, k["gt"], k["tp"], k["fn"], k["fp"], _rate(k)] for c, k in a.by_class.items()],
        )
    )
    parts.append(
        _table(
            "Misses by object height (pixels)",
            ["class", "bucket", "boxes", "missed", "miss rate"],
            [
                [c, f"{b} {WIDER_FACE_HEIGHT_BUCKETS[b]}", k["gt"], k["fn"], _rate(k)]
                for c, per in a.by_size.items()
                for b, k in per.items()
                if k["gt"]
            ],  # fmt: skip
        )
    )
    if a.by_attribute:
        parts.append(
            _table(
                "Misses by WIDER FACE attribute",
                ["attribute", "value", "boxes", "missed", "miss rate"],
                [
                    [attr, v, k["gt"], k["fn"], _rate(k)]
                    for attr, per in sorted(a.by_attribute.items())
                    for v, k in sorted(per.items())
                ],  # fmt: skip
            )
        )
    else:
        parts.append("<p>No WIDER FACE attributes (blur, occlusion, pose, illumination) on these labels.</p>")
    cols = [*CLASSES, BACKGROUND]
    parts.append(
        _table(
            "Confusion (rows: truth, columns: prediction; background = nothing there / nothing found)",
            ["truth \\ predicted", *cols],
            [[t, *[a.confusion[t][q] for q in cols]] for t in cols],
        )
    )
    parts.append("</body></html>")
    path = out_dir / "errors.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    log.info("error analysis: %s (%d cases in the gallery)", path, len(figures))
    return path
