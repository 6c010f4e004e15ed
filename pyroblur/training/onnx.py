"""ONNX export of trained weights (the file anonymization runs on a CPU without torch)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["export_onnx"]


def export_onnx(weights: Path, imgsz: int, out_dir: Path) -> Path:
    """Export to ONNX (opset chosen by ultralytics, simplified, dynamic batch) next to the report."""
    import shutil

    from ultralytics import YOLO

    path = Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, dynamic=True, simplify=True, verbose=False))
    dest = out_dir / "model.onnx"
    shutil.move(str(path), dest)
    return dest
