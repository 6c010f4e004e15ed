"""Ultralytics training with crash-safe resume from the run folder's last checkpoint."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyroblur.config import TrainConfig
from pyroblur.core.devices import resolve_device
from pyroblur.core.hashing import sha256_file
from pyroblur.manifests import TrainManifest

log = logging.getLogger(__name__)

DONE = "pyroblur-done.json"


#: Ultralytics' own MLflow integration: off on purpose. It would open a second run per training in
#: its own experiment (and, without ``MLFLOW_TRACKING_URI``, in ``./mlruns``) and turn on
#: ``mlflow.autolog()`` for the whole process; the pipeline's one run of record is logged by
#: :mod:`pyroblur.registry.tracking` from ``results.csv`` and the benchmark instead.
ULTRALYTICS_MLFLOW_MODULE = "ultralytics.utils.callbacks.mlflow"


def drop_ultralytics_mlflow(trainer: Any) -> None:
    """``on_pretrain_routine_start`` callback: remove ultralytics' MLflow callbacks from ``trainer``.

    Ultralytics adds its integrations (``SETTINGS["mlflow"]``, on whenever mlflow is importable)
    just before this event, and the MLflow one starts its run at ``on_pretrain_routine_end``;
    removing them here keeps the user's ultralytics settings file untouched.
    """
    for event, funcs in trainer.callbacks.items():
        trainer.callbacks[event] = [f for f in funcs if getattr(f, "__module__", "") != ULTRALYTICS_MLFLOW_MODULE]


def use_free_cpu_cores(trainer: Any) -> None:
    """``on_pretrain_routine_start`` callback: on the CPU, train with one torch thread per free core.

    Ultralytics' device selection sets torch to ``cpu_count - 1`` threads (one on a 2-core
    machine, which leaves the other core to the data loader's workers mostly idle); measured on
    2 cores, two threads train the demo's model 1.5x faster when the machine is otherwise idle,
    and 4x slower beside another busy process: :func:`pyroblur.core.devices.cpu_training_threads`
    decides (``PYROBLUR_CPU_THREADS`` overrides it).
    """
    device = getattr(trainer, "device", None)
    if getattr(device, "type", None) == "cpu":
        from pyroblur.core.devices import cpu_training_threads

        threads = cpu_training_threads()
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
            log.info("training on the CPU with %d torch threads", threads)


def _yolo(source: str, callbacks: Mapping[str, Callable[[Any], None]] | None = None) -> Any:
    """``YOLO(source)`` with ultralytics' MLflow callbacks switched off for its trainings, every
    CPU core used on the CPU, and ``callbacks`` (event name -> function of the trainer) added."""
    from ultralytics import YOLO

    model = YOLO(source)
    model.add_callback("on_pretrain_routine_start", drop_ultralytics_mlflow)
    model.add_callback("on_pretrain_routine_start", use_free_cpu_cores)
    for event, func in (callbacks or {}).items():
        model.add_callback(event, func)
    return model


class WeightsUnavailableError(RuntimeError):
    """The configured weights are neither on disk nor downloadable."""


def resolve_model(cfg: TrainConfig) -> str:
    """Check that the model can be built: a .yaml definition, a local .pt, or a downloadable one.

    Fails at once, naming the file and how to supply it, instead of silently training from
    random initialisation.
    """
    model = cfg.model
    if model.endswith((".yaml", ".yml")):
        return model
    if Path(model).exists():
        return str(Path(model).resolve())
    if not cfg.allow_download:
        raise WeightsUnavailableError(
            f"weights file '{model}' not found and train.allow_download is false. Put the file at "
            f"that path (or give its full path in train.model), or set train.model to a .yaml "
            f"(e.g. 'yolo11l.yaml') to train from scratch."
        )
    from ultralytics.utils.downloads import attempt_download_asset

    try:
        path = attempt_download_asset(model)
    except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
        raise WeightsUnavailableError(
            f"could not download weights '{model}' ({exc}). Without internet, copy the file to "
            f"the working directory or give its full path in train.model; or set train.model to a "
            f".yaml (e.g. 'yolo11l.yaml') to train from scratch."
        ) from exc
    if not Path(path).exists():
        raise WeightsUnavailableError(f"weights '{model}' could not be obtained; see the log above")
    return str(path)


def epochs_done(run_dir: Path) -> int:
    """Highest completed epoch in ultralytics' ``results.csv`` (0 when none).

    The highest epoch number, not the row count: an epoch logged just before a crash (the CSV
    is written before ``last.pt``) is trained again on resume and appears twice.
    """
    csv_path = run_dir / "results.csv"
    if not csv_path.exists():
        return 0
    with csv_path.open() as fh:
        return max((int(float(row["epoch"])) for row in csv.DictReader(fh) if row.get("epoch")), default=0)


def train(
    data_yaml: Path,
    cfg: TrainConfig,
    run_dir: Path,
    callbacks: Mapping[str, Callable[[Any], None]] | None = None,
) -> TrainManifest:
    """Train into ``run_dir`` (``weights/last.pt`` is written every epoch).

    If ``run_dir`` holds an unfinished run's ``last.pt`` (a crash, a killed worker, a retry),
    training resumes from it instead of starting over. A finished run is returned as is.
    ``callbacks`` (ultralytics event name -> function of the trainer) run during training,
    e.g. a sweep's pruning (:class:`pyroblur.training.sweep.PruningCallback`); an exception one
    raises stops the training with ``last.pt`` of the last epoch kept.
    """
    run_dir = Path(run_dir)
    done = run_dir / DONE
    if done.exists():
        return TrainManifest.model_validate_json(done.read_text())
    last = run_dir / "weights" / "last.pt"
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    best = run_dir / "weights" / "best.pt"
    finished = last.exists() and best.exists() and epochs_done(run_dir) >= cfg.epochs
    resumed = last.exists() and not finished
    if finished:  # crashed after the last epoch but before the stamp: nothing to resume
        log.info("run %s already trained %d epochs; not training again", run_dir, cfg.epochs)
        model = _yolo(str(best))
    elif resumed:
        log.info("resuming training from %s (epochs done: %d)", last, epochs_done(run_dir))
        model = _yolo(str(last), callbacks)
        model.train(resume=True)
    else:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        model = _yolo(resolve_model(cfg), callbacks)
        args: dict[str, Any] = {
            "data": str(data_yaml),
            "epochs": cfg.epochs,
            "imgsz": cfg.imgsz,
            "batch": cfg.batch,
            "device": device,
            "workers": cfg.workers,
            "seed": cfg.seed,
            "deterministic": True,
            "patience": cfg.patience,
            "project": str(run_dir.parent),
            "name": run_dir.name,
            "exist_ok": True,
            "verbose": False,
            **cfg.args,
        }
        log.info("training %s for %d epochs on %s", cfg.model, cfg.epochs, device)
        model.train(**args)
    weights = best if best.exists() else last
    metrics = {}
    trainer = getattr(model, "trainer", None)
    if trainer is not None and getattr(trainer, "metrics", None):
        metrics = {k: float(v) for k, v in trainer.metrics.items() if isinstance(v, (int, float))}
    manifest = TrainManifest(
        digest=sha256_file(weights),
        run_dir=str(run_dir),
        weights=str(weights),
        epochs=epochs_done(run_dir),
        resumed=resumed,
        device=device,
        seconds=time.perf_counter() - start,
        final_metrics=metrics,
    )
    done.write_text(manifest.model_dump_json(indent=2))
    return manifest


def read_run_args(run_dir: Path) -> dict[str, Any]:
    """The arguments ultralytics recorded for a run (``args.yaml``)."""
    import yaml

    return yaml.safe_load((Path(run_dir) / "args.yaml").read_text())


def summary(manifest: TrainManifest) -> str:
    return json.dumps(manifest.model_dump(), indent=2)
