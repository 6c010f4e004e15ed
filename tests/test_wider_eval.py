"""pyroblur.evaluation.wider against an independent transcription of the official protocol.

The reference below follows the public Python port of WIDER FACE's MATLAB evaluation
(``wondervictor/WiderFace-Evaluation``, ``evaluation.py`` + ``box_overlaps.pyx``) step by step,
loops and all, reading the ``.mat`` files with the port's own indexing
(``event_list[i][0][0]``, ``file_list[i][0][j][0][0]``, ``face_bbx_list[i][0][j][0]``,
``gt_list[i][0][j][0]``). The ``.mat`` files are fabricated with ``scipy.io.savemat`` in the
official structure, with images without predictions, images without faces and ignored faces.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat

from pyroblur.core.errors import InputError
from pyroblur.evaluation import wider

# ------------------------------------------------------------------ the reference (the port's algorithm)


def ref_overlaps(boxes: np.ndarray, query: np.ndarray) -> np.ndarray:
    out = np.zeros((boxes.shape[0], query.shape[0]))
    for k in range(query.shape[0]):
        box_area = (query[k, 2] - query[k, 0] + 1) * (query[k, 3] - query[k, 1] + 1)
        for n in range(boxes.shape[0]):
            iw = min(boxes[n, 2], query[k, 2]) - max(boxes[n, 0], query[k, 0]) + 1
            if iw > 0:
                ih = min(boxes[n, 3], query[k, 3]) - max(boxes[n, 1], query[k, 1]) + 1
                if ih > 0:
                    ua = (boxes[n, 2] - boxes[n, 0] + 1) * (boxes[n, 3] - boxes[n, 1] + 1) + box_area - iw * ih
                    out[n, k] = iw * ih / ua
    return out


def ref_norm_score(pred: dict) -> None:
    max_score, min_score = 0, 1
    for k in pred.values():
        for v in k.values():
            if len(v) == 0:
                continue
            min_score = min(np.min(v[:, -1]), min_score)
            max_score = max(np.max(v[:, -1]), max_score)
    diff = max_score - min_score
    for k in pred.values():
        for v in k.values():
            if len(v):
                v[:, -1] = (v[:, -1] - min_score) / diff


def ref_image_eval(pred, gt, ignore, iou_thresh):
    _pred, _gt = pred.copy(), gt.copy()
    pred_recall = np.zeros(_pred.shape[0])
    recall_list = np.zeros(_gt.shape[0])
    proposal_list = np.ones(_pred.shape[0])
    _pred[:, 2] += _pred[:, 0]
    _pred[:, 3] += _pred[:, 1]
    _gt[:, 2] += _gt[:, 0]
    _gt[:, 3] += _gt[:, 1]
    overlaps = ref_overlaps(_pred[:, :4], _gt)
    for h in range(_pred.shape[0]):
        gt_overlap = overlaps[h]
        max_overlap, max_idx = gt_overlap.max(), gt_overlap.argmax()
        if max_overlap >= iou_thresh:
            if ignore[max_idx] == 0:
                recall_list[max_idx] = -1
                proposal_list[h] = -1
            elif recall_list[max_idx] == 0:
                recall_list[max_idx] = 1
        pred_recall[h] = len(np.where(recall_list == 1)[0])
    return pred_recall, proposal_list


def ref_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
    pr_info = np.zeros((thresh_num, 2))
    for t in range(thresh_num):
        thresh = 1 - (t + 1) / thresh_num
        r_index = np.where(pred_info[:, 4] >= thresh)[0]
        if len(r_index):
            r_index = r_index[-1]
            pr_info[t, 0] = len(np.where(proposal_list[: r_index + 1] == 1)[0])
            pr_info[t, 1] = pred_recall[r_index]
    return pr_info


def ref_voc_ap(rec, prec):
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_evaluation(pred: dict, gt_dir) -> list[float]:
    """``pred``: event -> image name -> (P, 5) ``x y w h score``, sorted by descending score."""
    ref_norm_score(pred)
    gt_mat = loadmat(str(gt_dir / "wider_face_val.mat"))
    facebox_list, event_list, file_list = gt_mat["face_bbx_list"], gt_mat["event_list"], gt_mat["file_list"]
    setting_gts = [loadmat(str(gt_dir / f"wider_{s}_val.mat"))["gt_list"] for s in ("easy", "medium", "hard")]
    thresh_num, aps = 1000, []
    for gt_list in setting_gts:
        count_face = 0
        pr_curve = np.zeros((thresh_num, 2))
        for i in range(len(event_list)):
            event_name = str(event_list[i][0][0])
            img_list = file_list[i][0]
            pred_list = pred[event_name]
            sub_gt_list = gt_list[i][0]
            gt_bbx_list = facebox_list[i][0]
            for j in range(len(img_list)):
                pred_info = pred_list[str(img_list[j][0][0])]
                gt_boxes = gt_bbx_list[j][0].astype("float")
                keep_index = sub_gt_list[j][0]
                count_face += len(keep_index)
                if len(gt_boxes) == 0 or len(pred_info) == 0:
                    continue
                ignore = np.zeros(gt_boxes.shape[0])
                if len(keep_index) != 0:
                    ignore[keep_index.astype(int) - 1] = 1
                pred_recall, proposal_list = ref_image_eval(pred_info, gt_boxes, ignore, 0.5)
                pr_curve += ref_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
        with np.errstate(divide="ignore", invalid="ignore"):
            propose = pr_curve[:, 1] / pr_curve[:, 0]
        recall = pr_curve[:, 1] / count_face
        aps.append(float(ref_voc_ap(recall, propose)))
    return aps


# ------------------------------------------------------------------ fabricated suites


def fabricate(rng: np.random.Generator, tmp_path):
    """Random ground truth in the official structure and predictions near it, with every edge case."""
    events = ["0--Parade", "1--Handshaking", "2--Demonstration"]
    files, boxes, keep = [], [], {s: [] for s in wider.SETTINGS}
    preds: dict[tuple[str, str], np.ndarray] = {}
    for e, event in enumerate(events):
        names, bxs = [], []
        for s in wider.SETTINGS:
            keep[s].append([])
        for j in range(int(rng.integers(3, 8))):
            name = f"{e}_{event.split('--')[1]}_{j}"
            k = 0 if j == 0 else int(rng.integers(1, 12))  # the first image of each event has no face
            xy = rng.uniform(0, 500, (k, 2))
            wh = rng.uniform(3, 120, (k, 2))
            b = np.round(np.column_stack([xy, wh]), 1)
            names.append(name)
            bxs.append(b)
            # nested subsets: hard keeps most faces, medium the taller ones, easy the tallest
            hard = np.flatnonzero(rng.random(k) < 0.85)
            medium = hard[b[hard, 3] >= 20]
            easy = medium[b[medium, 3] >= 45]
            for s, idx in (("easy", easy), ("medium", medium), ("hard", hard)):
                keep[s][e].append(idx + 1)
            if j == 1:
                preds[(event, name)] = np.zeros((0, 5))  # an image without predictions
                continue
            rows = []
            for face in b:  # a detection near most faces (ignored ones too), some duplicates
                for _ in range(int(rng.integers(0, 3))):
                    jitter = rng.normal(0, 0.12, 4) * np.r_[face[2:], face[2:]]
                    rows.append([*(face + jitter), rng.uniform(0.05, 1)])
            for _ in range(int(rng.integers(0, 4))):  # false positives
                rows.append([*rng.uniform(0, 500, 2), *rng.uniform(3, 80, 2), rng.uniform(0, 0.7)])
            p = np.array(rows, np.float64).reshape(-1, 5)
            p[:, 2:4] = np.maximum(p[:, 2:4], 1)
            preds[(event, name)] = p
        files.append(names)
        boxes.append(bxs)
    gt = wider.WiderGroundTruth(events, files, boxes, keep)
    wider.save_ground_truth(gt, tmp_path)
    return gt, preds


def as_port_input(preds: dict[tuple[str, str], np.ndarray]) -> dict:
    out: dict = {}
    for (event, name), p in preds.items():
        out.setdefault(event, {})[name] = p[np.argsort(-p[:, 4], kind="mergesort")].copy()
    return out


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_the_official_algorithm(tmp_path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    _, preds = fabricate(rng, tmp_path)
    expected = ref_evaluation(as_port_input(preds), tmp_path)
    # Ours reads the same files and gets the predictions unsorted.
    shuffled = {k: p[rng.permutation(len(p))] for k, p in preds.items()}
    got = wider.evaluate(wider.load_ground_truth(tmp_path), shuffled)
    for setting, ref in zip(wider.SETTINGS, expected, strict=True):
        assert got[setting] == pytest.approx(ref, abs=1e-4), (setting, got, expected)
    assert 0 < got["hard"] < 1  # the fixture is neither trivial nor hopeless


def test_mat_files_have_the_official_structure(tmp_path) -> None:
    gt, _ = fabricate(np.random.default_rng(0), tmp_path)
    main = loadmat(str(tmp_path / "wider_face_val.mat"))
    assert main["event_list"].shape == (3, 1) and str(main["event_list"][1][0][0]) == "1--Handshaking"
    assert main["file_list"][0][0].shape == (len(gt.files[0]), 1)
    assert str(main["file_list"][0][0][2][0][0]) == gt.files[0][2]
    assert main["face_bbx_list"][0][0][2][0].shape == (len(gt.boxes[0][2]), 4)
    hard = loadmat(str(tmp_path / "wider_hard_val.mat"))["gt_list"]
    np.testing.assert_array_equal(hard[0][0][2][0].reshape(-1), gt.keep["hard"][0][2])
    back = wider.load_ground_truth(tmp_path)
    assert back.events == gt.events and back.files == gt.files
    np.testing.assert_allclose(back.boxes[2][2], gt.boxes[2][2])
    assert len(back.boxes[0][0]) == 0  # the image without faces survives the round trip


def test_perfect_predictions_score_one_and_ignored_faces_cost_nothing(tmp_path) -> None:
    boxes = [np.array([[10, 10, 40, 50], [100, 100, 30, 30], [200, 50, 8, 8]], np.float64)]
    keep = {"easy": [[np.array([1])]], "medium": [[np.array([1, 2])]], "hard": [[np.array([1, 2])]]}
    gt = wider.WiderGroundTruth(["0--E"], [["img"]], [boxes], keep)
    wider.save_ground_truth(gt, tmp_path)
    # a detection on each counted face plus a confident one on the ignored third face
    p = np.array([[10, 10, 40, 50, 0.9], [100, 100, 30, 30, 0.8], [200, 50, 8, 8, 0.99]])
    got = wider.evaluate(wider.load_ground_truth(tmp_path), {("0--E", "img"): p})
    assert got == {"easy": pytest.approx(1.0), "medium": pytest.approx(1.0), "hard": pytest.approx(1.0)}
    # the same confident box on empty background is a false positive ranked first
    p[2, :2] = [400, 400]
    got = wider.evaluate(wider.load_ground_truth(tmp_path), {("0--E", "img"): p})
    assert got["medium"] < 1.0
    expected = ref_evaluation({"0--E": {"img": p[np.argsort(-p[:, 4])].copy()}}, tmp_path)
    assert [got[s] for s in wider.SETTINGS] == pytest.approx(expected, abs=1e-4)


def test_no_predictions_at_all_is_zero_and_no_faces_is_nan(tmp_path) -> None:
    gt = wider.WiderGroundTruth(
        ["0--E"],
        [["a", "b"]],
        [[np.array([[1, 1, 20, 20]], np.float64), np.zeros((0, 4))]],
        {"easy": [[np.zeros(0, int), np.zeros(0, int)]], "medium": [[np.array([1]), np.zeros(0, int)]],
         "hard": [[np.array([1]), np.zeros(0, int)]]},
    )  # fmt: skip
    wider.save_ground_truth(gt, tmp_path)
    got = wider.evaluate(wider.load_ground_truth(tmp_path), {})
    assert math.isnan(got["easy"]) and got["medium"] == 0.0 and got["hard"] == 0.0


def test_missing_ground_truth_is_an_input_error(tmp_path) -> None:
    with pytest.raises(InputError, match="wider_face_val.mat"):
        wider.load_ground_truth(tmp_path)


def test_suite_run_scores_and_counts_images_seen_in_training(tmp_path, monkeypatch) -> None:
    import shutil

    import yaml

    from pyroblur.config import BenchmarkConfig, WiderSuiteConfig
    from pyroblur.core.detections import Detections
    from pyroblur.evaluation import benchmark

    suite = WiderSuiteConfig(
        name="fab", images=str(tmp_path / "images"), ground_truth=str(tmp_path / "gt"), fabricate=6,
        image_size=96, eval_tools_url=None,
    )  # fmt: skip
    gt_boxes: dict[str, np.ndarray] = {}

    def oracle(weights, paths, *args, **kwargs):  # the true faces, as a detector would return them
        gt = wider.load_ground_truth(tmp_path / "gt")
        for e, names in zip(gt.events, gt.files, strict=True):
            for n, b in zip(names, gt.boxes[gt.events.index(e)], strict=True):
                gt_boxes[n] = b
        out = []
        for p in paths:
            b = gt_boxes[Path(p).stem]
            xyxy = np.column_stack([b[:, :2], b[:, :2] + b[:, 2:]]).astype(np.float32)
            out.append(Detections(xyxy, np.zeros(len(b), np.int64), np.linspace(0.9, 0.5, len(b)).astype(np.float32)))
        return out

    monkeypatch.setattr(benchmark, "predict", oracle)
    train = tmp_path / "yolo" / "images" / "train"
    train.mkdir(parents=True)
    (tmp_path / "yolo" / "data.yaml").write_text(
        yaml.safe_dump({"path": str(tmp_path / "yolo"), "train": "images/train"})
    )
    # fabricate first (through the suite run), then put one suite image into the training split
    first = benchmark.run_wider_suite(Path("w.pt"), suite, 96, "cpu", BenchmarkConfig(), False)
    assert first.fabricated and first.images == 6 and first.in_training == 0
    assert first.easy == pytest.approx(1.0) and first.hard == pytest.approx(1.0)  # the oracle finds every face
    shutil.copy(next((tmp_path / "images").rglob("*.jpg")), train / "copy.jpg")
    again = benchmark.run_wider_suite(
        Path("w.pt"), suite, 96, "cpu", BenchmarkConfig(), False, tmp_path / "yolo" / "data.yaml"
    )
    assert again.in_training == 1
