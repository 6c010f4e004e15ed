"""MLflow, the one record of experiments and models: where the store is, and the training run.

Where: ``MLFLOW_TRACKING_URI`` when set (a team's server, e.g. the compose stack's
``http://127.0.0.1:5000``), else the embedded default that needs no server: a SQLite backend
``<data root>/mlflow/mlflow.db`` and a local artifact root ``<data root>/mlflow/artifacts``
(``make mlflow`` serves its UI). The registry (:mod:`pyroblur.registry.store`) uses the same
store, so a model version's run is the training run that produced it.

One training = one MLflow run in the experiment ``pyroblur`` (``PYROBLUR_MLFLOW_EXPERIMENT``),
found by the tag ``pyroblur.model_id`` (the first 16 hex digits of the weights' sha256, the
registry's id). The train task opens it (params: the train config and the dataset digests;
per-epoch series from ultralytics' ``results.csv``; the weights and training plots), the
benchmark task adds its figures and report, the promote task registers it, and the flow adds
the whole resolved config, the lineage and the link to the Prefect flow run. A re-run whose
tasks are all cached logs nothing new: it only links its flow run to the same MLflow run.

mlflow is imported inside functions only: importing it costs over a second, which the CPU
fast start of ``pyroblur anonymize`` cannot afford (that path reads the SQLite store directly,
see :func:`pyroblur.registry.store.registry_fingerprint`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from pyroblur.core.errors import EXIT_CONFIG, PyroblurError

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

EXPERIMENT = os.environ.get("PYROBLUR_MLFLOW_EXPERIMENT", "pyroblur")
MODEL_NAME = os.environ.get("PYROBLUR_MLFLOW_MODEL_NAME", "pyroblur-detector")
MODEL_ID_TAG = "pyroblur.model_id"


class TrackingStoreError(PyroblurError):
    """The MLflow tracking store cannot be reached or used; nothing was trained."""

    transient = True


@dataclass(frozen=True)
class MlflowStore:
    """One MLflow store: tracking and registry at ``uri``.

    Attributes:
        uri: the tracking (and registry) URI.
        artifact_root: the local artifact folder of the embedded default (``None`` for a
            server, which has its own).
        db_path: the SQLite file when the backend is SQLite (read without mlflow for speed).
    """

    uri: str
    artifact_root: Path | None
    db_path: Path | None


def store_for(root: Path) -> MlflowStore:
    """The store of the data root ``root``: ``MLFLOW_TRACKING_URI`` or ``<root>/mlflow/``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
        return MlflowStore(uri=uri, artifact_root=None, db_path=db)
    home = Path(root).resolve() / "mlflow"
    db = home / "mlflow.db"
    return MlflowStore(uri=f"sqlite:///{db}", artifact_root=home / "artifacts", db_path=db)


def _empty_sqlite_template() -> Path:
    """An empty SQLite store made by this mlflow version (its migrations run once per machine).

    Creating a store runs MLflow's ~60 alembic migrations, seconds on a small CPU; every new
    store under a data root (one per test, one per fresh clone) starts as a copy of this one
    instead. Kept in ``PYROBLUR_CACHE_DIR`` (default ``~/.cache/pyroblur``).
    """
    import shutil
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    from pyroblur.core.settings import cache_dir

    cache = cache_dir()
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        db = Path(tmp) / "empty.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}").search_experiments()
        staged = Path(tmp) / "staged.db"
        shutil.copyfile(db, staged)
        os.replace(staged, template)  # atomic: a racing process sees none or a whole template
    return template


def client(store: MlflowStore) -> MlflowClient:
    """An ``MlflowClient`` on ``store`` (tracking and registry); a new SQLite store starts as a
    copy of an empty store of this mlflow version (:func:`_empty_sqlite_template`)."""
    import shutil
    import tempfile

    from mlflow import MlflowClient

    db = store.db_path
    if db is not None and not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        try:
            template = _empty_sqlite_template()
            fd, tmp = tempfile.mkstemp(prefix=".mlflow-", suffix=".db", dir=db.parent)
            os.close(fd)
            shutil.copyfile(template, tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # as if MLflow had created it (mkstemp makes 0600)
            if not db.exists():
                os.replace(tmp, db)
            else:
                os.unlink(tmp)
        except OSError as exc:  # no cache dir: MLflow creates the store itself (slower)
            logger.debug("no SQLite template for %s: %s", db, exc)
    return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)


def experiment_id(store: MlflowStore, mlflow_client: MlflowClient | None = None) -> str:
    """The id of the experiment :data:`EXPERIMENT` in ``store`` (created on first use).

    Raises:
        TrackingStoreError: the store cannot be reached (names the URI).
    """
    c = mlflow_client or client(store)
    try:
        exp = c.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return exp.experiment_id
        location = store.artifact_root.as_uri() if store.artifact_root is not None else None
        try:
            return c.create_experiment(EXPERIMENT, artifact_location=location)
        except Exception:  # noqa: BLE001 - another process created it meanwhile
            exp = c.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                raise
            return exp.experiment_id
    except Exception as exc:  # noqa: BLE001 - mlflow raises many types for an unreachable store
        raise TrackingStoreError(
            f"MLflow tracking store {store.uri} is not usable: {type(exc).__name__}: {str(exc)[:300]}",
            subject=store.uri,
            hint="start it (docs/operations.md: `docker compose up mlflow`), fix MLFLOW_TRACKING_URI, "
            "or unset it to use the embedded SQLite store under the data directory",
        ) from exc


class CorruptTrackingStoreError(PyroblurError):
    """The embedded SQLite store exists but is not a database: the record is damaged, nothing
    was trained, and the file is left untouched (a retry cannot help)."""

    exit_code = EXIT_CONFIG


def _is_sqlite_garbage(store: MlflowStore, exc: BaseException) -> bool:
    if store.db_path is None or not store.db_path.is_file():
        return False
    with open(store.db_path, "rb") as fh:
        header = fh.read(16)
    return header != b"SQLite format 3\x00" or "not a database" in str(exc)


def check_store(root: Path) -> str:
    """Fail fast (before any training) when the tracking store is down or damaged; returns
    the URI.

    Raises:
        CorruptTrackingStoreError: the embedded SQLite file is not a database (names it).
        TrackingStoreError: the store cannot be reached (names the URI).
    """
    store = store_for(root)
    try:
        experiment_id(store, client(store))
    except Exception as exc:  # noqa: BLE001 - mlflow and SQLAlchemy raise many types
        if _is_sqlite_garbage(store, exc):
            raise CorruptTrackingStoreError(
                f"the MLflow store {store.db_path} is not an SQLite database: the record of runs and "
                "models is damaged; left untouched",
                subject=str(store.db_path),
                hint="restore it from a backup, or move it away to start a new record (its registered "
                "models and champion are then gone)",
            ) from exc
        if isinstance(exc, TrackingStoreError):
            raise
        raise TrackingStoreError(
            f"MLflow tracking store {store.uri} is not usable: {type(exc).__name__}: {str(exc)[:300]}",
            subject=store.uri,
        ) from exc
    return store.uri


def local_path(uri: str) -> Path | None:
    """The local file behind a ``file:`` URI or a plain path; ``None`` for remote schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and uri[1:3] == ":\\"):
        return Path(uri)
    return None


def metric_key(name: str) -> str:
    """MLflow metric names allow alphanumerics and ``_ - . space / :``; the rest becomes ``_``."""
    return re.sub(r"[^\w\-. /:]", "_", name)


def find_run(store: MlflowStore, model_id: str, mlflow_client: MlflowClient | None = None) -> str | None:
    """The id of the run that trained ``model_id``, or ``None``."""
    c = mlflow_client or client(store)
    runs = c.search_runs(
        [experiment_id(store, c)], filter_string=f"tags.`{MODEL_ID_TAG}` = '{model_id}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def ensure_run(store: MlflowStore, model_id: str, mlflow_client: MlflowClient | None = None) -> tuple[str, bool]:
    """The run of ``model_id``: found by tag, or created; returns ``(run_id, created)``."""
    c = mlflow_client or client(store)
    run_id = find_run(store, model_id, c)
    if run_id is not None:
        return run_id, False
    run = c.create_run(experiment_id(store, c), run_name=f"train-{model_id}", tags={MODEL_ID_TAG: model_id})
    return run.info.run_id, True


def artifact_dir(mlflow_client: MlflowClient, run_id: str) -> str:
    """The run's artifact URI."""
    return mlflow_client.get_run(run_id).info.artifact_uri


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """A nested config as MLflow params: ``{"train.epochs": "1", "sources.0.name": "demo"}``."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
    elif isinstance(value, (list, tuple)) and value and any(isinstance(v, (Mapping, list, tuple)) for v in value):
        for i, v in enumerate(value):
            out.update(flatten(f"{prefix}.{i}", v))
    else:
        out[prefix] = json.dumps(value) if not isinstance(value, str) else value
    return {metric_key(k): v[:6000] for k, v in out.items()}


def _log_params(c: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    """Log ``params`` the run does not have yet (MLflow refuses to change a logged param)."""
    from mlflow.entities import Param

    have = c.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in have]
    for i in range(0, len(new), 100):
        c.log_batch(run_id, params=new[i : i + 100])


def _log_metrics(c: MlflowClient, run_id: str, values: Mapping[str, float], step: int = 0) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(metric_key(k), float(v), now, step) for k, v in values.items() if math.isfinite(float(v))]
    for i in range(0, len(metrics), 1000):
        c.log_batch(run_id, metrics=metrics[i : i + 1000])


def epoch_series(results_csv: Path) -> list[tuple[int, dict[str, float]]]:
    """Ultralytics' ``results.csv`` as ``[(epoch, {metric: value})]`` (MLflow-safe names)."""
    rows: list[tuple[int, dict[str, float]]] = []
    if not results_csv.is_file():
        return rows
    with results_csv.open() as fh:
        for row in csv.DictReader(fh):
            clean = {k.strip(): v for k, v in row.items() if k}
            try:
                epoch = int(float(clean.pop("epoch")))
            except (KeyError, ValueError):
                continue
            values = {}
            for k, v in clean.items():
                try:
                    values[metric_key(k.replace("(B)", ""))] = float(v)
                except (TypeError, ValueError):
                    continue
            rows.append((epoch, values))
    return rows


def log_training(
    root: Path,
    model_id: str,
    run_dir: Path,
    weights: Path,
    params: Mapping[str, str],
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> str:
    """Open (or find) ``model_id``'s run and log the training: params, per-epoch series, the
    weights and ultralytics' plots; logged once (a retried task does not log the series twice).
    ``run_id`` logs into that run instead (a sweep's trial run).

    Returns:
        The MLflow run id.
    """
    store = store_for(root)
    c = client(store)
    if run_id is None:
        run_id, _ = ensure_run(store, model_id, c)
    run = c.get_run(run_id)
    if run.data.tags.get("pyroblur.logged.train") == "true":
        return run_id
    _log_params(c, run_id, params)
    for epoch, values in epoch_series(Path(run_dir) / "results.csv"):
        _log_metrics(c, run_id, values, step=epoch)
    c.log_artifact(run_id, str(weights), "weights")
    for extra in sorted(Path(run_dir).glob("*")):
        if extra.suffix in {".png", ".jpg", ".csv", ".yaml"}:
            c.log_artifact(run_id, str(extra), "training")
    for k, v in {**(tags or {}), "pyroblur.logged.train": "true"}.items():
        c.set_tag(run_id, k, v)
    logger.info("MLflow run %s (%s): training of model %s logged", run_id, store.uri, model_id)
    return run_id


def log_benchmark(
    root: Path,
    model_id: str,
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    report_dir: Path,
    onnx: Path | None = None,
) -> str:
    """Add the benchmark to ``model_id``'s run: every figure as a metric (per class, privacy,
    WIDER easy/medium/hard, speed), the report folder (report, PR curves, confusion matrix)
    and the ONNX export; logged once."""
    store = store_for(root)
    c = client(store)
    run_id, _ = ensure_run(store, model_id, c)
    run = c.get_run(run_id)
    if run.data.tags.get("pyroblur.logged.benchmark") == "true":
        return run_id
    _log_params(c, run_id, params)
    _log_metrics(c, run_id, {f"bench/{k}": v for k, v in metrics.items()})
    if Path(report_dir).is_dir():
        c.log_artifacts(run_id, str(report_dir), "benchmark")
    if onnx is not None and Path(onnx).is_file():
        c.log_artifact(run_id, str(onnx), "onnx")
    c.set_tag(run_id, "pyroblur.logged.benchmark", "true")
    c.set_terminated(run_id)
    logger.info("MLflow run %s: benchmark of model %s logged", run_id, model_id)
    return run_id


def link_flow_run(
    root: Path,
    model_id: str,
    config: Mapping[str, Any],
    flow_run: Mapping[str, str],
    lineage: Mapping[str, Any],
) -> tuple[str, str]:
    """Record the resolved config (once), the lineage and the Prefect flow run on ``model_id``'s
    run; returns ``(run_id, UI URL of the run)``.

    ``flow_run`` holds ``id`` and ``url`` of the Prefect flow run. The first flow run that
    trained the model is ``prefect.flow_run_id``; every later one that reused it (cached) is
    added as ``prefect.flow_run.<id>``.
    """
    store = store_for(root)
    c = client(store)
    run_id, _ = ensure_run(store, model_id, c)
    run = c.get_run(run_id)
    _log_params(c, run_id, flatten("config", dict(config)))
    if "prefect.flow_run_id" not in run.data.tags:
        c.set_tag(run_id, "prefect.flow_run_id", flow_run.get("id", ""))
        c.set_tag(run_id, "prefect.flow_run_url", flow_run.get("url", ""))
    elif flow_run.get("id"):
        c.set_tag(run_id, f"prefect.flow_run.{flow_run['id']}", flow_run.get("url", ""))
    if "lineage.json" not in {a.path for a in c.list_artifacts(run_id)}:
        c.log_dict(run_id, dict(lineage), "lineage.json")
    base = os.environ.get("PYROBLUR_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")
    return run_id, f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
