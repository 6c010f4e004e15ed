"""The champion's ONNX export: made once at promotion, so anonymization on a CPU starts fast.

A still image anonymized with the ``.pt`` spends most of its start-up importing torch and
ultralytics (seconds on a CPU); the same model exported to ONNX runs on onnxruntime alone
(:class:`pyroblur.anonymize.onnx_detector.OnnxDetector`). :func:`export_champion_onnx` exports
the registry's own copy of a gated model's weights (hashed first: the export is made from the
bytes whose sha256 the registry id names) and records the file, its sha256 and the source's
sha256 in the entry (:func:`pyroblur.registry.store.record_onnx`).

The export is a speed-up, never a gate: when it cannot be made (a package missing, an export
error) the promotion stands, a warning says why, and anonymization uses the ``.pt``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from pyroblur.core.hashing import sha256_file
from pyroblur.registry.store import (
    OnnxExport,
    RegistryError,
    load_registry,
    record_onnx,
    verified_onnx,
    verified_weights,
)

logger = logging.getLogger(__name__)

__all__ = ["export_champion_onnx", "export_onnx_file"]


def export_onnx_file(weights: Path, imgsz: int) -> tuple[Path, str]:
    """Export ultralytics ``weights`` to ONNX next to them; returns the file and the tools used.

    The benchmark's own export (:func:`pyroblur.training.onnx.export_onnx`: opset chosen
    by ultralytics, graph simplified with onnxslim, dynamic batch and input size), so the file
    anonymization runs is made as the one whose boxes the benchmark checked. Needs torch,
    ultralytics, ``onnx`` and ``onnxslim`` (declared dependencies; ultralytics' auto-install is
    off in this project, so nothing is fetched).
    """
    import torch
    import ultralytics

    from pyroblur.training.onnx import export_onnx

    path = export_onnx(weights, imgsz, weights.parent)
    return path, f"ultralytics {ultralytics.__version__}, torch {torch.__version__}"


def export_champion_onnx(registry_path: Path, model_id: str, imgsz: int) -> OnnxExport | None:
    """Export the gated model ``model_id`` to ONNX and record it; ``None`` (and a warning) when not.

    Idempotent: an export already recorded for the same source weights and ``imgsz`` whose file
    still has its sha256 is returned as is (a retried promote task exports nothing again).

    Args:
        registry_path: the registry JSON file.
        model_id: the registry id of a model whose promotion gates passed.
        imgsz: its training input size.

    Returns:
        The recorded export, or ``None`` when none could be made (the reason is logged as a
        warning; anonymization then uses the ``.pt``).
    """
    registry_path = Path(registry_path)
    entry = load_registry(registry_path).get(model_id)
    if entry is None or not entry.gates_passed():
        logger.warning("model %s is not a gated model of %s: no ONNX export made", model_id, registry_path)
        return None
    try:
        weights = verified_weights(registry_path, entry)
    except RegistryError as exc:
        logger.warning("no ONNX export made: %s", exc)
        return None
    if entry.onnx is not None and entry.onnx.imgsz == imgsz and verified_onnx(registry_path, entry)[0] is not None:
        logger.info("model %s already has its ONNX export %s", model_id, entry.onnx.path)
        return entry.onnx
    work = Path(tempfile.mkdtemp(prefix=".onnx-export-", dir=registry_path.parent))
    try:
        source = work / weights.name
        shutil.copyfile(weights, source)
        source_sha256 = sha256_file(source)  # the bytes exported are the bytes the id names
        if not source_sha256.startswith(model_id):
            logger.warning(
                "model %s weights %s have sha256 %s, not the registered id: no ONNX export made "
                "(the weights changed after promotion; promote them again)",
                model_id,
                weights,
                source_sha256[:16],
            )
            return None
        try:
            exported, exporter = export_onnx_file(source, imgsz)
            _check_loads(exported)
        except Exception as exc:  # noqa: BLE001 - an export is a speed-up, never a failed promotion
            logger.warning(
                "ONNX export of model %s (%s) failed, anonymization will use the .pt: %s: %s. "
                "Check that onnx and onnxslim are installed (pip install -e .), then promote again.",
                model_id,
                weights,
                type(exc).__name__,
                exc,
            )
            return None
        return record_onnx(
            registry_path, model_id, exported, source_sha256=source_sha256, imgsz=imgsz, exporter=exporter
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check_loads(path: Path) -> None:
    """Raise unless onnxruntime opens ``path`` with one image input and one output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
        raise ValueError(f"{path}: expected one 4-d image input and one output, got {len(inputs)} and {len(outputs)}")
