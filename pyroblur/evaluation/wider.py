"""WIDER FACE's official evaluation protocol (Easy / Medium / Hard AP).

Written from the official MATLAB ``eval_tools`` as described by its public Python port
(``wondervictor/WiderFace-Evaluation``), which is what published numbers are computed with
(see ../shared/anchors.md); ``tests/test_wider_eval.py`` checks this module against an
independent transcription of that port on ``.mat`` files in the official structure.

Ground truth: ``wider_face_val.mat`` holds ``event_list`` (E x 1 cell of event names),
``file_list`` (per event, an n x 1 cell of image names without ``.jpg``) and ``face_bbx_list``
(per event, per image, a k x 4 array ``x y w h`` in pixels). ``wider_easy_val.mat``,
``wider_medium_val.mat`` and ``wider_hard_val.mat`` hold ``gt_list``: per event, per image, the
1-based indices of the faces that count in that setting; the other faces are ignored.

The protocol, per setting:

* prediction scores (``x y w h score`` per image) are min-max normalised over the whole
  prediction set (the tools start from min 1 and max 0);
* per image, predictions in descending score order each take the ground-truth face they overlap
  most (IoU with the ``+1`` pixel convention of the tools' ``bbox_overlaps``); at IoU >= 0.5 a
  prediction on an ignored face is neither a true nor a false positive (it leaves the proposal
  count), one on a counted face not yet found finds it, anything else is a proposal that finds
  nothing;
* an image without predictions or without faces adds nothing but its counted faces;
* 1000 score thresholds ``1 - (t + 1) / 1000``; proposals and found faces are summed over images
  at each threshold; precision = found / proposals, recall = found / counted faces;
* AP is VOC's area under the precision envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyroblur.core.detections import Detections
from pyroblur.core.errors import InputError

logger = logging.getLogger(__name__)

SETTINGS = ("easy", "medium", "hard")
GT_FILE = "wider_face_val.mat"
SUBSET_FILES = {s: f"wider_{s}_val.mat" for s in SETTINGS}
THRESHOLDS = 1000
IOU = 0.5

ImageKey = tuple[str, str]  # (event, image name without .jpg)


@dataclass(frozen=True)
class WiderGroundTruth:
    """The ground truth of a WIDER-format suite.

    Attributes:
        events: event names, e.g. ``0--Parade``.
        files: per event, the image names (no ``.jpg``).
        boxes: per event, per image, ``(k, 4)`` float ``x y w h`` pixels.
        keep: setting -> per event, per image, the 1-based indices of the counted faces.
    """

    events: list[str]
    files: list[list[str]]
    boxes: list[list[np.ndarray]]
    keep: dict[str, list[list[np.ndarray]]]

    def images(self) -> list[ImageKey]:
        """Every ``(event, name)``, in file order."""
        return [(e, f) for e, names in zip(self.events, self.files, strict=True) for f in names]


def _cell(x: np.ndarray) -> list:
    """A MATLAB n x 1 (or 1 x n) cell array as read by ``loadmat`` -> its n elements."""
    return [item for item in np.asarray(x, dtype=object).reshape(-1)]


def _text(x: object) -> str:
    return str(np.asarray(x).reshape(-1)[0])


def load_ground_truth(gt_dir: Path) -> WiderGroundTruth:
    """Read the four official ``.mat`` files from ``gt_dir``.

    Raises:
        InputError: a file is missing or lacks the official variables.
    """
    from scipy.io import loadmat

    gt_dir = Path(gt_dir)
    try:
        main = loadmat(str(gt_dir / GT_FILE))
        subsets = {s: loadmat(str(gt_dir / f))["gt_list"] for s, f in SUBSET_FILES.items()}
        events = [_text(e) for e in _cell(main["event_list"])]
        files = [[_text(f) for f in _cell(fl)] for fl in _cell(main["file_list"])]
        boxes = [
            [np.asarray(b, np.float64).reshape(-1, 4) for b in _cell(per_event)]
            for per_event in _cell(main["face_bbx_list"])
        ]
        keep = {
            s: [[np.asarray(k, np.int64).reshape(-1) for k in _cell(per_event)] for per_event in _cell(gl)]
            for s, gl in subsets.items()
        }
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(
            f"not a WIDER FACE ground-truth folder: {type(exc).__name__}: {exc}",
            subject=str(gt_dir),
            hint=f"it must hold {GT_FILE} and {', '.join(SUBSET_FILES.values())} from WIDER's eval_tools.zip",
        ) from exc
    return WiderGroundTruth(events, files, boxes, keep)


def save_ground_truth(gt: WiderGroundTruth, gt_dir: Path) -> None:
    """Write ``gt`` as the four ``.mat`` files in the official structure (cell arrays)."""
    from scipy.io import savemat

    def cells(items: Sequence[object]) -> np.ndarray:
        out = np.empty((len(items), 1), dtype=object)
        for i, item in enumerate(items):
            out[i, 0] = item
        return out

    gt_dir = Path(gt_dir)
    gt_dir.mkdir(parents=True, exist_ok=True)
    savemat(
        str(gt_dir / GT_FILE),
        {
            "event_list": cells(gt.events),
            "file_list": cells([cells(names) for names in gt.files]),
            "face_bbx_list": cells([cells([b.astype(np.float64).reshape(-1, 4) for b in bs]) for bs in gt.boxes]),
        },
    )
    for s, f in SUBSET_FILES.items():
        per = [cells([k.astype(np.float64).reshape(-1, 1) for k in ks]) for ks in gt.keep[s]]
        savemat(str(gt_dir / f), {"gt_list": cells(per)})


def _overlaps(pred_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """IoU ``(P, G)`` with the tools' ``+1`` pixel convention (widths are ``x2 - x1 + 1``)."""
    iw = np.minimum(pred_xyxy[:, None, 2], gt_xyxy[None, :, 2]) - np.maximum(pred_xyxy[:, None, 0], gt_xyxy[None, :, 0])
    ih = np.minimum(pred_xyxy[:, None, 3], gt_xyxy[None, :, 3]) - np.maximum(pred_xyxy[:, None, 1], gt_xyxy[None, :, 1])
    iw, ih = iw + 1, ih + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_p = ((pred_xyxy[:, 2] - pred_xyxy[:, 0] + 1) * (pred_xyxy[:, 3] - pred_xyxy[:, 1] + 1))[:, None]
    area_g = ((gt_xyxy[:, 2] - gt_xyxy[:, 0] + 1) * (gt_xyxy[:, 3] - gt_xyxy[:, 1] + 1))[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / (area_p + area_g - inter), 0.0)


def _image_curve(pred: np.ndarray, gt_xywh: np.ndarray, counted: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(T, 2)``: proposals and found counted faces of one image at each score threshold.

    ``pred`` is ``(P, 5)`` ``x y w h score`` sorted by descending (normalised) score.
    """
    # row @ to_xyxy: (x, y, w, h) -> (x, y, x + w, y + h), the tools' corner convention
    to_xyxy = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)
    ious = _overlaps(pred[:, :4] @ to_xyxy, gt_xywh @ to_xyxy)
    state = np.zeros(len(gt_xywh), np.int8)  # 0 not found, 1 found, -1 ignored face hit
    proposal = np.ones(len(pred), bool)
    found = np.zeros(len(pred), np.int64)
    for p in range(len(pred)):
        g = int(np.argmax(ious[p]))
        if ious[p, g] >= IOU:
            if not counted[g]:
                state[g] = -1
                proposal[p] = False
            elif state[g] == 0:
                state[g] = 1
        found[p] = int((state == 1).sum())
    # With scores sorted, the predictions at or above a threshold are a prefix of the list.
    kept = np.searchsorted(-pred[:, 4], -thresholds, side="right")
    proposals = np.concatenate([[0], np.cumsum(proposal)])[kept]
    hits = np.where(kept > 0, found[np.maximum(kept - 1, 0)], 0)
    return np.stack([proposals, hits], axis=1).astype(np.float64)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC AP: area under the precision envelope, summed where recall changes."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def normalise_scores(preds: Mapping[ImageKey, np.ndarray]) -> dict[ImageKey, np.ndarray]:
    """Copies of ``preds`` with scores min-max normalised over all of them (as the tools do)."""
    scores = [p[:, 4] for p in preds.values() if len(p)]
    lo = min(1.0, *(float(s.min()) for s in scores)) if scores else 1.0
    hi = max(0.0, *(float(s.max()) for s in scores)) if scores else 0.0
    out = {}
    for key, p in preds.items():
        q = np.array(p, np.float64).reshape(-1, 5)
        if len(q):
            q[:, 4] = (q[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
        out[key] = q
    return out


def evaluate(gt: WiderGroundTruth, preds: Mapping[ImageKey, np.ndarray]) -> dict[str, float]:
    """Easy / Medium / Hard AP (``[0, 1]``) of ``preds`` (``(event, name) -> (P, 5) x y w h score``).

    Images missing from ``preds`` have no predictions. A setting without counted faces is ``nan``.
    """
    norm = normalise_scores(preds)
    for key, p in norm.items():  # descending score; stable, so ties keep the detector's order
        norm[key] = p[np.argsort(-p[:, 4], kind="mergesort")]
    thresholds = 1 - (np.arange(THRESHOLDS) + 1) / THRESHOLDS
    aps = {}
    for setting in SETTINGS:
        curve = np.zeros((THRESHOLDS, 2))
        faces = 0
        for e, event in enumerate(gt.events):
            for i, name in enumerate(gt.files[e]):
                boxes = gt.boxes[e][i]
                keep = gt.keep[setting][e][i]
                faces += len(keep)
                pred = norm.get((event, name), np.zeros((0, 5)))
                if len(boxes) == 0 or len(pred) == 0:
                    continue
                counted = np.zeros(len(boxes), bool)
                counted[keep - 1] = True
                curve += _image_curve(pred, boxes, counted, thresholds)
        if faces == 0:
            aps[setting] = float("nan")
            continue
        proposals, hits = curve[:, 0], curve[:, 1]
        # No proposal yet means no hit either (recall 0): its precision never reaches the sum.
        precision = np.divide(hits, proposals, out=np.zeros_like(hits), where=proposals > 0)
        aps[setting] = voc_ap(hits / faces, precision)
    return aps


def to_wider_predictions(dets: Detections, class_id: int = 0) -> np.ndarray:
    """``(P, 5)`` ``x y w h score`` of the ``class_id`` boxes of ``dets`` (pixels)."""
    d = dets.filter(dets.class_id == class_id)
    xyxy = d.xyxy.astype(np.float64).reshape(-1, 4)
    return np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2], d.confidence.astype(np.float64)])


def image_path(images_dir: Path, event: str, name: str) -> Path:
    """Where WIDER keeps an image: ``<images>/<event>/<name>.jpg``."""
    return Path(images_dir) / event / f"{name}.jpg"


def run_suite(
    predict: Callable[[list[Path]], list[Detections]],
    images_dir: Path,
    gt_dir: Path,
    batch: int = 16,
) -> tuple[dict[str, float], int, int]:
    """Predict every image of a WIDER-format suite and score it.

    Returns ``({easy, medium, hard}, images, faces)``.

    Raises:
        InputError: the ground truth does not load, or an image it lists is missing.
    """
    gt = load_ground_truth(gt_dir)
    keys = gt.images()
    paths = [image_path(images_dir, e, n) for e, n in keys]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} of {len(paths)} images listed in {GT_FILE} are missing, e.g. {missing[0]}",
            subject=str(images_dir),
            hint="point benchmark.wider.images at WIDER_val/images",
        )
    preds: dict[ImageKey, np.ndarray] = {}
    for start in range(0, len(paths), batch):
        for key, d in zip(keys[start : start + batch], predict(paths[start : start + batch]), strict=True):
            preds[key] = to_wider_predictions(d)
    faces = sum(len(b) for bs in gt.boxes for b in bs)
    aps = evaluate(gt, preds)
    logger.info("WIDER protocol on %s: %s (%d images, %d faces)", gt_dir, aps, len(keys), faces)
    return aps, len(keys), faces


def fabricate_suite(images_dir: Path, gt_dir: Path, num_images: int, size: int, seed: int) -> WiderGroundTruth:
    """A small offline suite in WIDER's layout: synthetic street images, faces as ground truth.

    The images come from the project's own synthetic generator (not WIDER's photos), in three
    events. Subsets by face height, nested like the official ones: Hard counts every face, Medium
    those at least 6% of the image side tall, Easy those at least 12% (the rest are ignored).
    """
    import cv2

    from pyroblur.data.sources.synthetic import render_image

    events = ["0--Synthetic_Street", "1--Synthetic_Square", "2--Synthetic_Road"]
    files: list[list[str]] = [[] for _ in events]
    boxes: list[list[np.ndarray]] = [[] for _ in events]
    keep: dict[str, list[list[np.ndarray]]] = {s: [[] for _ in events] for s in SETTINGS}
    min_height = {"hard": 0.0, "medium": 0.06 * size, "easy": 0.12 * size}
    for i in range(num_images):
        e = i % len(events)
        img, recs = render_image(seed, i, size, 0.1)
        name = f"{events[e].split('--')[0]}_synthetic_{i:04d}"
        path = image_path(images_dir, events[e], name)
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), img)
        faces = np.array([[b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1] for b in recs if b.class_id == 0], np.float64)
        faces = faces.reshape(-1, 4)
        files[e].append(name)
        boxes[e].append(faces)
        for s in SETTINGS:
            keep[s][e].append(np.flatnonzero(faces[:, 3] >= min_height[s]) + 1)
    gt = WiderGroundTruth(events, files, boxes, keep)
    save_ground_truth(gt, gt_dir)
    return gt
