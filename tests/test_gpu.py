"""On a CUDA GPU: training with AMP, resume after a crash, FP16 vs FP32 parity of the benchmark,
anonymization. Every test is marked ``gpu`` and skips where torch sees no CUDA device.

``benchmarks/gpu_suite.sh`` runs these on a GPU host. ``PYROBLUR_GPU_TEST_DEVICE=cpu`` runs the
same code on the CPU (a check of the tests' own logic where no GPU is at hand; the AMP and
FP16 expectations then become "off", as ultralytics decides on a CPU).
"""

from __future__ import annotations

import csv
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

DEVICE = os.environ.get("PYROBLUR_GPU_TEST_DEVICE", "cuda:0")
ON_CUDA = DEVICE.startswith("cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
]

ROOT = Path(__file__).resolve().parents[1]
IMGSZ = 160


def _gpu_common():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_common

    return gpu_common


class _Record:
    """What the trainer ran with, per epoch, optionally crashing after some epochs.

    ``callback`` is a plain function: ultralytics deep-copies its default callbacks into each
    trainer, and a deep copy of a function is the function itself (of an object, a copy).
    """

    def __init__(self, crash_after_epochs: int | None = None) -> None:
        self.seen: list[dict] = []
        seen = self.seen

        def callback(trainer) -> None:
            seen.append({"epoch": trainer.epoch + 1, "amp": bool(trainer.amp), "device": str(trainer.device)})
            if crash_after_epochs is not None and trainer.epoch + 1 >= crash_after_epochs:
                raise RuntimeError("simulated worker crash after the checkpoint was written")

        self.callback = callback


class _Callback:
    """Add ``fn`` to ultralytics' default callbacks for ``event`` (copied into every new trainer)."""

    def __init__(self, event: str, fn) -> None:
        from ultralytics.utils import callbacks

        self.registry, self.event, self.fn = callbacks.default_callbacks, event, fn

    def __enter__(self):
        self.registry[self.event].append(self.fn)
        return self.fn

    def __exit__(self, *exc) -> None:
        self.registry[self.event].remove(self.fn)


def _cfg(epochs: int, **changes):
    from pyroblur.config import TrainConfig

    fields = {
        "model": "yolo11n.yaml",
        "allow_download": False,
        "epochs": epochs,
        "imgsz": IMGSZ,
        "batch": 16,
        "device": DEVICE,
        "workers": 2,
        "patience": epochs,
        "args": {"plots": False},
    }
    return TrainConfig(**{**fields, **changes})


def _losses(run_dir: Path) -> list[float]:
    with (run_dir / "results.csv").open() as fh:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(fh)]
    return [float(r[k]) for r in rows for k in ("train/box_loss", "train/cls_loss", "train/dfl_loss")]


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    pytest.importorskip("ultralytics")
    root = tmp_path_factory.mktemp("gpu-data")
    return _gpu_common().write_synthetic_yolo(root, 160, 32, 16, size=IMGSZ, seed=0)


@pytest.fixture(scope="module")
def trained(data_yaml, tmp_path_factory):
    """A YOLO11n trained 8 epochs on the device through the library's trainer; (manifest, record)."""
    from pyroblur.training.trainer import train

    record = _Record()
    with _Callback("on_train_epoch_end", record.callback):
        manifest = train(data_yaml, _cfg(8), tmp_path_factory.mktemp("gpu-run") / "run")
    return manifest, record


def test_training_runs_on_the_gpu_with_amp(trained):
    manifest, record = trained
    assert manifest.device == DEVICE
    assert Path(manifest.weights).is_file() and manifest.epochs == 8
    # ultralytics keeps AMP on CUDA (its offline check is skipped, not failed) and off on the CPU
    assert record.seen and all(s["amp"] is ON_CUDA for s in record.seen)
    assert all(s["device"].startswith("cuda" if ON_CUDA else "cpu") for s in record.seen)
    losses = _losses(Path(manifest.run_dir))
    assert losses and all(math.isfinite(v) for v in losses), "AMP produced NaN/inf losses"


def test_a_crashed_run_resumes_on_the_gpu(data_yaml, tmp_path):
    from pyroblur.training.trainer import epochs_done, train

    run_dir = tmp_path / "run"
    crash = _Record(crash_after_epochs=2)
    with _Callback("on_model_save", crash.callback), pytest.raises(RuntimeError, match="simulated worker crash"):
        train(data_yaml, _cfg(4), run_dir)
    assert epochs_done(run_dir) == 2 and (run_dir / "weights" / "last.pt").is_file()
    rows_before = (run_dir / "results.csv").read_text().splitlines()[:3]

    resumed = _Record()
    with _Callback("on_train_epoch_end", resumed.callback):
        manifest = train(data_yaml, _cfg(4), run_dir)
    assert manifest.resumed and manifest.epochs == 4
    assert [s["epoch"] for s in resumed.seen] == [3, 4], "resume trained other epochs than the missing ones"
    assert all(s["amp"] is ON_CUDA and s["device"].startswith("cuda" if ON_CUDA else "cpu") for s in resumed.seen)
    assert (run_dir / "results.csv").read_text().splitlines()[:3] == rows_before


def test_fp16_forward_matches_fp32(trained, data_yaml):
    """The raw head output (boxes in input pixels, class scores) of FP16 vs FP32 on real images."""
    import cv2
    from ultralytics import YOLO
    from ultralytics.data.augment import LetterBox

    manifest, _ = trained
    images = sorted((data_yaml.parent / "test" / "images").glob("*.jpg"))[:8]
    x = np.stack([LetterBox((IMGSZ, IMGSZ), auto=False)(image=cv2.imread(str(p))) for p in images])
    x = torch.from_numpy(np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2))).to(DEVICE).float() / 255
    model = YOLO(manifest.weights).model.to(DEVICE).float().eval()
    with torch.inference_mode():
        ref = model(x)[0].float()
        if not ON_CUDA:
            pytest.skip("FP16 convolutions are a CUDA path; on the CPU only the FP32 side ran")
        half = model.half()(x.half())[0].float()
    boxes_err = (half[:, :4] - ref[:, :4]).abs().max().item()
    score_err = (half[:, 4:] - ref[:, 4:]).abs().max().item()
    assert boxes_err < 1.0, f"FP16 boxes differ by {boxes_err:.3f} px"
    assert score_err < 0.02, f"FP16 class scores differ by {score_err:.4f}"


def test_benchmark_stage_fp16_on_the_gpu_agrees_with_fp32(trained, data_yaml, tmp_path):
    from pyroblur.config import BenchmarkConfig
    from pyroblur.evaluation.benchmark import benchmark, box_parity, load_yolo_split, predict

    manifest, _ = trained
    cfg = BenchmarkConfig(device=DEVICE, speed_images=8, onnx=True)
    report, images, preds16 = benchmark(Path(manifest.weights), data_yaml, IMGSZ, cfg, tmp_path / "report", "gpu")
    assert report.device == DEVICE and report.ms_per_image > 0
    assert report.overall["images_per_s_batch32"] > 0
    assert report.onnx["box_parity"] >= cfg.onnx_min_parity
    test = load_yolo_split(data_yaml, "test")
    preds32 = predict(Path(manifest.weights), test.images, IMGSZ, DEVICE, cfg.conf, cfg.iou, half=False)
    for min_conf in (0.25, 0.1):
        assert box_parity(preds32, preds16, min_conf) >= 0.9
        assert box_parity(preds16, preds32, min_conf) >= 0.9


def test_anonymize_on_the_gpu(trained, data_yaml, tmp_path):
    import cv2

    from pyroblur.anonymize import AnonymizeOptions, UltralyticsDetector, anonymize_path, build_detector

    manifest, _ = trained
    options = AnonymizeOptions(weights=Path(manifest.weights), device=DEVICE, progress=False)
    detector = build_detector(options)
    assert isinstance(detector, UltralyticsDetector)
    assert detector.device == DEVICE and detector.half is ON_CUDA
    src = tmp_path / "in"
    src.mkdir()
    frames = []
    for p in sorted((data_yaml.parent / "test" / "images").glob("*.jpg"))[:4]:
        (src / p.name).write_bytes(p.read_bytes())
        frames.append(cv2.imread(str(p)))
    dets = detector(frames)
    assert len(dets) == len(frames)
    assert next(detector.model.model.parameters()).device.type == ("cuda" if ON_CUDA else "cpu")
    report = anonymize_path(src, tmp_path / "out", options)
    assert report.ok and len(report.processed) == 4
    assert all(Path(r.output).is_file() for r in report.processed)
