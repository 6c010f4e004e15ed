"""The model registry: MLflow's Model Registry is the record; ``registry.json`` a derived cache.

Every gated candidate is a version of one registered model (``pyroblur-detector``,
``PYROBLUR_MLFLOW_MODEL_NAME``) in the store of :func:`pyroblur.registry.tracking.store_for`
(the embedded SQLite store under the data root unless ``MLFLOW_TRACKING_URI`` says otherwise).
The version's source is the weights logged as an artifact of the training run; its tags carry
the weights' sha256 (``pyroblur.sha256``), each gate's value, threshold and verdict
(``gate.<name>.value`` / ``.threshold`` / ``.verdict``) and the whole entry as JSON
(``pyroblur.entry``: metrics, digests, report, ONNX export). The champion is the version the
alias ``@champion`` points at, the last candidate that lost is ``@challenger``; promotion moves
the alias. An MLflow alias names one version, so there are never two champions, and moving it
is one update, so there is never none once there was one.

``registry.json`` (next to the store, ``<data root>/registry.json``) is a cache derived from
MLflow, never written by anyone else: it records the fingerprint of the registry tables it was
built from (:func:`registry_fingerprint`, read from the SQLite file with the standard library in
milliseconds). :func:`load_registry` uses the cache only when that fingerprint equals the live
one; otherwise (or for a server store, which has no such fingerprint) it rebuilds the cache from
MLflow. So the cache cannot disagree with the record, and the CPU fast start of ``pyroblur
anonymize`` needs no ``import mlflow`` (over a second) while nothing changed.

Promotions on one host (or on a volume with POSIX locks) are serialized by an ``fcntl`` lock on
``<registry>.lock``, so two pipelines never both beat the same old champion.

Weights are never trusted by path alone: :func:`resolve_champion` (the one public way to the
champion of record) hashes the champion's weights and refuses them when they are missing or
their sha256 differs from the one recorded on the version; the ONNX export is checked the same
way. A remote artifact store's files are downloaded once to ``<registry dir>/mlflow-cache/`` and
verified on every use.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pyroblur.core.errors import PermanentError
from pyroblur.core.hashing import sha256_file
from pyroblur.core.io import write_atomic
from pyroblur.manifests import Gate
from pyroblur.registry import tracking
from pyroblur.registry.tracking import MODEL_NAME, MlflowStore, store_for

logger = logging.getLogger(__name__)

Status = Literal["champion", "challenger", "retired"]
SCHEMA_VERSION = 2
MLFLOW_MODEL_NAME = MODEL_NAME
CHAMPION, CHALLENGER = "champion", "challenger"
ENTRY_TAG, SHA_TAG, STATUS_TAG = "pyroblur.entry", "pyroblur.sha256", "pyroblur.status"
#: status tag of a version whose registration has not finished (ignored until it has)
PENDING = "pending"


class RegistryError(PermanentError):
    """Base error of the model registry."""


class CorruptRegistryError(RegistryError):
    """The registry file exists but is not a valid registry; it is left untouched."""


class UngatedChampionError(RegistryError):
    """The champion's entry has no record of passed promotion gates: it is not used by default."""


class ChampionIntegrityError(RegistryError):
    """The champion's weights are missing or differ from the sha256 recorded on its version."""


class OnnxExport(BaseModel):
    """A registered model exported to ONNX (what anonymization on a CPU runs without torch).

    Attributes:
        path: the ``.onnx`` file, relative to the registry's directory when inside it.
        sha256: sha256 of that file; a file that no longer has it is never used.
        source_sha256: sha256 of the gated ``.pt`` it was exported from (its first 16 hex
            digits are the entry's id).
        imgsz: the input size it was exported at (the model's training size; the export has
            dynamic axes, so ``--imgsz`` still applies).
        exporter: the tools that made it, e.g. ``ultralytics 8.4.190, torch 2.15.0``.
        exported_at: export time (UTC).
    """

    model_config = ConfigDict(extra="forbid")

    path: str
    sha256: str
    source_sha256: str
    imgsz: int
    exporter: str = ""
    exported_at: datetime


class ModelEntry(BaseModel):
    """One registered model.

    Attributes:
        id: ``sha256`` of the weights file, first 16 hex digits (same weights, same id).
        weights: URI of the weights artifact (``file:`` for a local artifact root).
        metrics: evaluation metrics (e.g. :meth:`pyroblur.evaluation.metrics.EvaluationReport.flat`).
        primary_metric: the metric name the promotion decision used.
        primary_value: the candidate's value of ``primary_metric`` (higher is better).
        config_digest: digest of the training config that produced the model.
        data_digest: digest of the dataset the metrics were measured on.
        created_at: registration time (UTC).
        status: ``champion`` (at most one), ``challenger`` or ``retired``.
        gates: every promotion gate with its value and verdict; ``None`` for entries written
            before gates existed (such a champion is refused by :func:`champion_weights`).
        test_digest: digest of the test split (images and labels) the gates were measured on.
        report: path of the benchmark report the metrics come from.
        onnx: its ONNX export, when one was made (``None`` for entries promoted before
            exports existed, or when the export failed: the ``.pt`` is then used).
        sha256: the weights' full sha256 (also the version tag ``pyroblur.sha256``).
        model_name, version: the MLflow registered model and version number.
        run_id: the MLflow run that trained (or registered) it.
    """

    # NaN metrics (e.g. AP of a class without ground truth) round-trip as JSON NaN constants
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    id: str
    weights: str
    metrics: dict[str, float]
    primary_metric: str
    primary_value: float
    config_digest: str
    data_digest: str
    created_at: datetime
    status: Status
    gates: list[Gate] | None = None
    test_digest: str = ""
    report: str = ""
    onnx: OnnxExport | None = None
    sha256: str = ""
    model_name: str = ""
    version: int | None = None
    run_id: str = ""

    def gates_passed(self) -> bool:
        """True when the entry records gates and every one of them passed."""
        return bool(self.gates) and all(g.passed for g in self.gates)


class RegistryFile(BaseModel):
    """The registry as derived from MLflow (and cached in ``registry.json``).

    Attributes:
        tracking_uri: the MLflow store it was derived from.
        derived_from: :func:`registry_fingerprint` of that store when it was read (``""``: a
            store without a fingerprint, never read back from the cache).
        models: one entry per model version, oldest first.
    """

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    schema_version: int = SCHEMA_VERSION
    tracking_uri: str = ""
    derived_from: str = ""
    models: list[ModelEntry] = Field(default_factory=list)

    def champion(self) -> ModelEntry | None:
        """The champion entry, or ``None``."""
        champions = [m for m in self.models if m.status == "champion"]
        return champions[-1] if champions else None

    def get(self, model_id: str) -> ModelEntry | None:
        """The entry with this id, or ``None``."""
        return next((m for m in self.models if m.id == model_id), None)


class Candidate(BaseModel):
    """A trained model offered for promotion.

    Attributes:
        weights: path of the ``.pt`` weights file.
        metrics: its metrics; must contain the primary metric.
        config_digest: digest of the training config.
        data_digest: digest of the evaluation data.
        test_digest: digest of the test split (images and labels) itself.
        report: path of the benchmark report.
    """

    model_config = ConfigDict(extra="forbid")

    weights: Path
    metrics: dict[str, float]
    config_digest: str = ""
    data_digest: str = ""
    test_digest: str = ""
    report: str = ""


@dataclass(frozen=True)
class Decision:
    """Outcome of :func:`promote_if_better`.

    Attributes:
        promoted: whether the candidate is now the champion.
        reason: one human-readable sentence with both values.
        candidate_id: registry id of the candidate.
        candidate_value: candidate's value of ``primary_metric``.
        champion_id: id of the champion before the decision (``None`` if there was none).
        champion_value: that champion's value of ``primary_metric`` (``None`` if none).
        primary_metric: the metric compared.
        min_improvement: the margin required (absolute, in the metric's units).
        gates: every gate with its value and verdict (``improvement`` first).
    """

    promoted: bool
    reason: str
    candidate_id: str
    candidate_value: float
    champion_id: str | None
    champion_value: float | None
    primary_metric: str
    min_improvement: float
    gates: tuple[Gate, ...] = ()


@contextlib.contextmanager
def _locked(registry_path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<registry>.lock`` (the registry itself gets replaced)."""
    registry_path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = registry_path.with_name(registry_path.name + ".lock")
    with lock_path.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


EMPTY_STORE = "empty"


def registry_fingerprint(store: MlflowStore, model_name: str = MODEL_NAME) -> str | None:
    """A digest of everything the registry derives from ``store`` for ``model_name``.

    Read from the SQLite file with the standard library (read-only, milliseconds, no
    ``import mlflow``): the model's aliases, its versions (number, status, source, run, last
    update) and every version tag. ``"empty"`` when the SQLite file does not exist; ``None``
    for a server store or a file this code cannot read (the caller then asks MLflow).
    """
    import hashlib
    import json
    import sqlite3

    if store.db_path is None:
        return None
    if not store.db_path.exists():
        return EMPTY_STORE
    try:
        con = sqlite3.connect(f"file:{store.db_path}?mode=ro", uri=True, timeout=30)
        try:
            rows = [
                con.execute(
                    "SELECT alias, version FROM registered_model_aliases WHERE name = ? ORDER BY alias", (model_name,)
                ).fetchall(),
                con.execute(
                    "SELECT version, status, source, run_id, last_updated_time FROM model_versions "
                    "WHERE name = ? ORDER BY version",
                    (model_name,),
                ).fetchall(),
                con.execute(
                    "SELECT version, key, value FROM model_version_tags WHERE name = ? ORDER BY version, key",
                    (model_name,),
                ).fetchall(),
            ]
        finally:
            con.close()
    except sqlite3.Error as exc:
        logger.debug("registry fingerprint of %s unavailable: %s", store.db_path, exc)
        return None
    return hashlib.sha256(json.dumps(rows, default=str).encode()).hexdigest()


def _entry_of(version: object, aliases: Mapping[str, int]) -> ModelEntry | None:
    """The :class:`ModelEntry` a model version's tags record (``None``: not ours)."""
    tags = dict(getattr(version, "tags", {}) or {})
    raw = tags.get(ENTRY_TAG)
    if raw is None:
        return None
    try:
        entry = ModelEntry.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptRegistryError(
            f"model version {version.name} v{version.version} has an unreadable {ENTRY_TAG} tag: {exc.errors()[0]['msg']}"  # type: ignore[attr-defined]
        ) from exc
    number = int(version.version)  # type: ignore[attr-defined]
    if aliases.get(CHAMPION) == number:  # the alias is the record of who is champion
        status = "champion"
    else:
        status = tags.get(STATUS_TAG, "challenger")
        if status == PENDING:
            return None  # a registration that died before it finished: not a registered candidate
        if status == "champion":  # the tag says champion but the alias has moved on
            status = "retired"
    return entry.model_copy(
        update={
            "status": status,
            "version": number,
            "model_name": version.name,  # type: ignore[attr-defined]
            "run_id": version.run_id or "",  # type: ignore[attr-defined]
            "sha256": tags.get(SHA_TAG, entry.sha256),
        }
    )


def _from_mlflow(store: MlflowStore, fingerprint: str | None) -> RegistryFile:
    """Read the registered model's versions and aliases from MLflow (imports mlflow)."""
    from mlflow.exceptions import MlflowException

    c = tracking.client(store)
    try:
        model = c.get_registered_model(MODEL_NAME)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return RegistryFile(tracking_uri=store.uri, derived_from=fingerprint or "")
        raise tracking.TrackingStoreError(
            f"MLflow registry {store.uri} cannot be read: {exc}", subject=store.uri
        ) from exc
    except Exception as exc:  # noqa: BLE001 - unreachable server, bad URI
        raise tracking.TrackingStoreError(
            f"MLflow registry {store.uri} cannot be read: {type(exc).__name__}: {str(exc)[:300]}",
            subject=store.uri,
            hint="start the tracking server or fix MLFLOW_TRACKING_URI (docs/operations.md)",
        ) from exc
    aliases = {k: int(v) for k, v in (model.aliases or {}).items()}
    versions = c.search_model_versions(f"name = '{MODEL_NAME}'", max_results=10000)
    entries = [e for v in sorted(versions, key=lambda v: int(v.version)) if (e := _entry_of(v, aliases)) is not None]
    return RegistryFile(tracking_uri=store.uri, derived_from=fingerprint or "", models=entries)


def _write_cache(registry_path: Path, reg: RegistryFile) -> None:
    try:
        write_atomic(registry_path, reg.model_dump_json(indent=2) + "\n")
    except OSError as exc:  # a read-only data root still reads MLflow; the cache is a speed-up
        logger.debug("registry cache %s not written: %s", registry_path, exc)


def _read(registry_path: Path, *, write_cache: bool = True) -> RegistryFile:
    registry_path = Path(registry_path)
    store = store_for(registry_path.parent)
    fingerprint = registry_fingerprint(store)  # before reading MLflow: a newer state never gets an older stamp
    if fingerprint is not None and registry_path.is_file():
        try:
            cached = RegistryFile.model_validate_json(registry_path.read_bytes())
        except (ValidationError, ValueError):
            cached = None  # a derived file: rebuilt, whatever it holds
        if cached is not None and cached.derived_from == fingerprint and cached.tracking_uri == store.uri:
            return cached
    if fingerprint == EMPTY_STORE:
        return RegistryFile(tracking_uri=store.uri, derived_from=fingerprint)
    reg = _from_mlflow(store, fingerprint)
    if write_cache:
        _write_cache(registry_path, reg)
    return reg


def load_registry(registry_path: Path) -> RegistryFile:
    """The registry of record, read from MLflow (through the verified cache when it is current).

    ``registry_path`` is the cache file ``<data root>/registry.json``; the MLflow store is the
    one of its folder (:func:`pyroblur.registry.tracking.store_for`). An empty store creates
    nothing on disk.

    Raises:
        CorruptRegistryError: a version's entry tag does not parse.
        TrackingStoreError: the MLflow store cannot be read.
    """
    return _read(Path(registry_path))


def artifact_file(registry_path: Path, uri: str) -> Path:
    """The local file behind an artifact URI recorded on a version (weights, ONNX).

    Embedded store: the path below ``mlflow/artifacts/`` re-rooted at this data root's own
    artifact folder, so a data root that was moved or mounted elsewhere still finds its files
    (their sha256 is checked by the callers either way). Another local path: itself. A remote
    store (``mlflow-artifacts:``, ``s3:``): a copy downloaded once into
    ``<registry dir>/mlflow-cache/``.
    """
    registry_path = Path(registry_path)
    local = tracking.local_path(uri)
    if local is not None:
        store = store_for(registry_path.parent)
        parts = local.parts
        if store.artifact_root is not None:
            for i in range(len(parts) - 1, 0, -1):
                if parts[i] == "artifacts" and parts[i - 1] == "mlflow":
                    return store.artifact_root.joinpath(*parts[i + 1 :])
        return local if local.is_absolute() else registry_path.parent / local
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    dest = registry_path.parent / "mlflow-cache" / parsed.netloc / parsed.path.lstrip("/")
    if not dest.is_file():
        import mlflow.artifacts

        dest.parent.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest.parent))
    return dest


@dataclass(frozen=True)
class ChampionFiles:
    """The champion of record's files, verified, as :func:`resolve_champion` found them.

    Attributes:
        entry: the champion's entry (its gates passed); ``entry.model_name``,
            ``entry.version`` and ``entry.run_id`` name the MLflow model version and its run.
        weights: local path of its ``.pt`` weights, whose sha256 is the one on the version.
        onnx: local path of its ONNX export when one is recorded and the file has the
            recorded sha256; ``None`` otherwise.
        onnx_problem: why ``onnx`` is ``None`` (no export recorded, file missing, sha256
            mismatch), one sentence naming the file; empty when ``onnx`` is set.
    """

    entry: ModelEntry
    weights: Path
    onnx: Path | None
    onnx_problem: str

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>`` of the champion."""
        return f"models:/{self.entry.model_name}/{self.entry.version}"


def _gated_champion(registry_path: Path) -> ModelEntry | None:
    """The champion's entry, refused (raises) when it lacks a passed gate record."""
    champion = load_registry(registry_path).champion()
    if champion is None:
        return None
    if not champion.gates_passed():
        failed = [g.name for g in champion.gates or [] if not g.passed]
        why = f"failed gates {failed}" if failed else "no record of passed promotion gates"
        raise UngatedChampionError(
            f"champion {champion.id} has {why}, so it is not used by default",
            subject=str(registry_path),
            hint="promote a model through the gated pipeline (`pyroblur run`), or pass --model explicitly",
        )
    return champion


def verified_onnx(registry_path: Path, entry: ModelEntry) -> tuple[Path | None, str]:
    """``entry``'s ONNX export and ``""`` when its file exists with the recorded sha256 and the
    record says it came from this entry's weights; else ``None`` and why not (one sentence)."""
    record = entry.onnx
    if record is None:
        return None, f"model {entry.id} has no ONNX export recorded (promoted before exports, or the export failed)"
    if not record.source_sha256.startswith(entry.id):
        return None, (
            f"the ONNX record of model {entry.id} names source weights {record.source_sha256[:16]}, "
            "not this model: not used"
        )
    try:
        path = artifact_file(Path(registry_path), record.path)
    except Exception as exc:  # noqa: BLE001 - an artifact that cannot be fetched is not used
        return None, f"the ONNX export {record.path} of model {entry.id} cannot be fetched: {exc}"
    if not path.is_file():
        return None, f"the ONNX export {path} of model {entry.id} is missing"
    actual = sha256_file(path)
    if actual != record.sha256:
        return None, (
            f"the ONNX export {path} of model {entry.id} has sha256 {actual[:16]}..., the registry "
            f"recorded {record.sha256[:16]}...: changed since export, not used"
        )
    return path, ""


def verified_weights(registry_path: Path, entry: ModelEntry) -> Path:
    """The local file of ``entry``'s weights, after checking its sha256 against the version's.

    Raises:
        ChampionIntegrityError: the file is missing or cannot be fetched, or its sha256 is not
            the one recorded on the model version (the message names both).
    """
    where = f"{entry.model_name or MODEL_NAME} v{entry.version}"
    try:
        path = artifact_file(Path(registry_path), entry.weights)
    except Exception as exc:  # noqa: BLE001 - remote store errors
        raise ChampionIntegrityError(
            f"the weights {entry.weights} of model {entry.id} ({where}) cannot be fetched: {exc}",
            subject=entry.weights,
        ) from exc
    if not path.is_file():
        raise ChampionIntegrityError(
            f"the weights {path} of model {entry.id} ({where}) are missing: refused",
            subject=str(path),
            hint="promote a model again (`pyroblur run`) or pass --model",
        )
    actual = sha256_file(path)
    expected = entry.sha256 or entry.id
    if not actual.startswith(expected):
        raise ChampionIntegrityError(
            f"the weights {path} of model {entry.id} ({where}) have sha256 {actual[:16]}..., the registry "
            f"recorded {expected[:16]}...: altered since registration, refused",
            subject=str(path),
            hint="restore the file from the MLflow artifact store, promote a model again, or pass --model",
        )
    return path


def resolve_champion(registry_path: Path | None = None, *, check_onnx: bool = True) -> ChampionFiles | None:
    """The champion of record (``models:/<name>@champion``): its verified files and version.

    The one public way to the champion: the anonymizer, the flows and the HTTP service call
    it. Reads the registry through :func:`load_registry` (no ``import mlflow`` while the
    cache is current), refuses a champion without passed gates, hashes its weights against
    the sha256 recorded on the version and, when ``check_onnx``, its ONNX export too (a
    missing, changed or foreign ONNX is reported in ``onnx_problem`` and never handed out).

    Args:
        registry_path: the registry cache file; default ``<data root>/registry.json``.
        check_onnx: also verify the ONNX export (what a CPU run uses).

    Returns:
        The champion's files, or ``None`` when the registered model has no champion.

    Raises:
        UngatedChampionError: the champion lacks a passed gate record.
        ChampionIntegrityError: its weights are missing or altered.
        CorruptRegistryError, TrackingStoreError: the record cannot be read.
    """
    if registry_path is None:
        from pyroblur.core.settings import get_paths

        registry_path = get_paths().registry
    registry_path = Path(registry_path)
    champion = _gated_champion(registry_path)
    if champion is None:
        return None
    weights = verified_weights(registry_path, champion)
    onnx, problem = verified_onnx(registry_path, champion) if check_onnx else (None, "not checked")
    return ChampionFiles(entry=champion, weights=weights, onnx=onnx, onnx_problem=problem)


def champion_weights(registry_path: Path) -> Path | None:
    """The champion's verified ``.pt`` (:func:`resolve_champion` without the ONNX), or ``None``."""
    champion = resolve_champion(registry_path, check_onnx=False)
    return None if champion is None else champion.weights


def _set_entry_tags(c: object, version: int, entry: ModelEntry, status: str | None = None) -> None:
    """The version's tags: the entry as JSON, the sha256, the status, each gate's figures."""
    tags = {
        ENTRY_TAG: entry.model_dump_json(),
        SHA_TAG: entry.sha256,
        STATUS_TAG: status or entry.status,
        "pyroblur.id": entry.id,
        "pyroblur.primary_metric": entry.primary_metric,
        "pyroblur.primary_value": f"{entry.primary_value:.6g}",
        "pyroblur.data_digest": entry.data_digest,
        "pyroblur.test_digest": entry.test_digest,
    }
    for g in entry.gates or []:
        key = tracking.metric_key(g.name)
        tags[f"gate.{key}.value"] = "none" if g.value is None else f"{g.value:.6g}"
        tags[f"gate.{key}.threshold"] = "none" if g.threshold is None else f"{g.threshold:.6g}"
        tags[f"gate.{key}.verdict"] = "pass" if g.passed else "fail"
        tags[f"gate.{key}.detail"] = g.detail
    if entry.onnx is not None:
        tags["pyroblur.onnx.sha256"] = entry.onnx.sha256
    for k, v in tags.items():
        c.set_model_version_tag(MODEL_NAME, str(version), k, v)  # type: ignore[attr-defined]


def record_onnx(
    registry_path: Path,
    model_id: str,
    exported: Path,
    *,
    source_sha256: str,
    imgsz: int,
    exporter: str = "",
) -> OnnxExport:
    """Log ``exported`` as the ``onnx/`` artifact of model ``model_id``'s run and record it
    (path, sha256, source sha256) on its model version, under the registry lock.

    Raises:
        KeyError: no version of ``model_id`` in the registry.
        ValueError: ``source_sha256`` is not the sha256 of that entry's weights.
    """
    registry_path = Path(registry_path)
    if not source_sha256.startswith(model_id):
        raise ValueError(f"source sha256 {source_sha256[:16]} is not that of model {model_id}")
    digest = sha256_file(exported)
    store = store_for(registry_path.parent)
    with _locked(registry_path):
        reg = _read(registry_path, write_cache=False)
        entry = reg.get(model_id)
        if entry is None or entry.version is None:
            raise KeyError(f"model {model_id} is not in the registry {store.uri}")
        c = tracking.client(store)
        name = f"{Path(tracking.local_path(entry.weights) or entry.weights).stem}.onnx"
        staged = exported.with_name(name)
        if staged != exported:
            os.replace(exported, staged)
        c.log_artifact(entry.run_id, str(staged), "onnx")
        staged.unlink(missing_ok=True)
        record = OnnxExport(
            path=f"{c.get_run(entry.run_id).info.artifact_uri}/onnx/{name}",
            sha256=digest,
            source_sha256=source_sha256,
            imgsz=imgsz,
            exporter=exporter,
            exported_at=datetime.now(UTC),
        )
        entry.onnx = record
        _set_entry_tags(c, entry.version, entry)
        _write_cache(registry_path, _read(registry_path, write_cache=False))
    logger.info("registry %s: model %s exported to ONNX %s (sha256 %s)", store.uri, model_id, record.path, digest[:16])
    return record


def _register(
    registry_path: Path,
    store: MlflowStore,
    weights: Path,
    entry: ModelEntry,
    old_champion: ModelEntry | None,
) -> ModelEntry:
    """Create the MLflow model version of ``entry`` (weights logged on its run when missing),
    tag it, and move ``@champion`` (or ``@challenger``) to it."""
    from mlflow.exceptions import MlflowException

    c = tracking.client(store)
    run_id, _ = tracking.ensure_run(store, entry.id, c)
    artifact_uri = c.get_run(run_id).info.artifact_uri
    if weights.name not in {Path(a.path).name for a in c.list_artifacts(run_id, "weights")}:
        c.log_artifact(run_id, str(weights), "weights")
    source = f"{artifact_uri}/weights/{weights.name}"
    try:
        c.create_registered_model(MODEL_NAME, description="PyroBlur face + license plate detector (YOLO11)")
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    version = c.create_model_version(
        MODEL_NAME, source, run_id=run_id, description=entry.gates[0].detail if entry.gates else ""
    )
    number = int(version.version)
    entry = entry.model_copy(update={"weights": source, "version": number, "run_id": run_id, "model_name": MODEL_NAME})
    _set_entry_tags(c, number, entry, status=PENDING)  # ignored until the alias has moved
    c.set_tag(run_id, "pyroblur.model_version", f"{MODEL_NAME}/{number}")
    if entry.status == "champion":
        c.set_registered_model_alias(MODEL_NAME, CHAMPION, str(number))  # one update: never two, never none
        if old_champion is not None and old_champion.version is not None:
            c.set_model_version_tag(MODEL_NAME, str(old_champion.version), STATUS_TAG, "retired")
    else:
        c.set_registered_model_alias(MODEL_NAME, CHALLENGER, str(number))
    c.set_model_version_tag(MODEL_NAME, str(number), STATUS_TAG, entry.status)
    return entry


def promote_if_better(
    registry_path: Path,
    candidate: Candidate,
    primary_metric: str,
    min_improvement: float = 0.0,
    champion_metrics: Mapping[str, float] | None = None,
    gates: Sequence[Gate] = (),
) -> Decision:
    """Register ``candidate`` and make it the champion only if every gate passes.

    The ``improvement`` gate is decided here, under the registry lock: the first model passes
    it; otherwise the candidate must be *strictly* better than the champion on
    ``primary_metric`` (higher is better) and by at least ``min_improvement`` (a tie is never
    better, whatever the margin), with a finite value. A champion that lacks the metric is
    never replaced. The candidate becomes a version of the MLflow registered model (its weights
    logged on its training run when they are not there yet), with every gate as version tags;
    ``@champion`` moves to it when promoted, ``@challenger`` otherwise. ``gates`` are the policy's other gates (evidence, recall floors; see
    :mod:`pyroblur.registry.promotion`), measured by the caller; any failed gate keeps the
    champion. Every gate is recorded in the entry, so :func:`champion_weights` can refuse a
    champion without a passed record. The old champion becomes ``retired``; a losing
    candidate is kept as ``challenger``. Offering weights that are already registered changes
    nothing and repeats their standing (safe for task retries).

    Args:
        registry_path: the registry cache file; its folder's MLflow store is the record
            (:func:`pyroblur.registry.tracking.store_for`).
        candidate: the new model and its metrics.
        primary_metric: metric name in ``candidate.metrics`` to compare, e.g. ``"mAP50-95"``.
        min_improvement: required absolute margin in the metric's units (e.g. 0.005).
        champion_metrics: the champion's metrics re-measured on the candidate's evaluation
            data; when given they replace the stored ones for this comparison (use it when the
            test set changed, since stored numbers from other data are not comparable).
        gates: further gates, each already decided.

    Returns:
        The :class:`Decision`, with both values, every gate and the reason.

    Raises:
        KeyError: ``primary_metric`` is missing from the candidate's metrics.
        FileNotFoundError: the candidate's weights do not exist.
        CorruptRegistryError: a version's entry tag does not parse.
        TrackingStoreError: the MLflow store cannot be reached.
    """
    registry_path = Path(registry_path)
    if primary_metric not in candidate.metrics:
        raise KeyError(
            f"candidate metrics lack the primary metric {primary_metric!r}; have {sorted(candidate.metrics)}"
        )
    weights = Path(candidate.weights)
    if not weights.is_file():
        raise FileNotFoundError(f"candidate weights {weights} do not exist")
    sha256 = sha256_file(weights)
    model_id = sha256[:16]
    value = float(candidate.metrics[primary_metric])
    store = store_for(registry_path.parent)

    with _locked(registry_path):
        reg = _read(registry_path, write_cache=False)
        champion = reg.champion()
        champ_value = _champion_value(champion, primary_metric, champion_metrics)
        common = {
            "candidate_id": model_id,
            "candidate_value": value,
            "champion_id": champion.id if champion else None,
            "champion_value": champ_value,
            "primary_metric": primary_metric,
            "min_improvement": min_improvement,
        }

        existing = reg.get(model_id)
        if existing is not None:
            decision = Decision(
                promoted=existing.status == "champion",
                reason=f"model {model_id} is already registered as {existing.status}; nothing changed",
                gates=tuple(existing.gates or ()),
                **common,
            )
            logger.info(decision.reason)
            return decision

        if champion is not None and data_digest_differs(champion, candidate, champion_metrics):
            logger.warning(
                "champion %s was measured on data %s, candidate on %s: the values may not be "
                "comparable (pass champion_metrics re-measured on the same data)",
                champion.id,
                champion.data_digest,
                candidate.data_digest,
            )
        all_gates = (improvement_gate(value, champ_value, champion, primary_metric, min_improvement), *gates)
        promoted = all(g.passed for g in all_gates)
        decision = Decision(promoted=promoted, reason=_reason(all_gates), gates=all_gates, **common)

        entry = ModelEntry(
            id=model_id,
            weights=str(weights.resolve()),
            sha256=sha256,
            metrics={k: float(v) for k, v in candidate.metrics.items()},
            primary_metric=primary_metric,
            primary_value=value,
            config_digest=candidate.config_digest,
            data_digest=candidate.data_digest,
            created_at=datetime.now(UTC),
            status="champion" if promoted else "challenger",
            gates=list(all_gates),
            test_digest=candidate.test_digest,
            report=candidate.report,
        )
        entry = _register(registry_path, store, weights, entry, champion)
        _write_cache(registry_path, _read(registry_path, write_cache=False))

    logger.info("registry %s: %s v%s: %s", store.uri, MODEL_NAME, entry.version, decision.reason)
    for g in all_gates:
        logger.info("gate %-28s %s: %s", g.name, "pass" if g.passed else "FAIL", g.detail)
    return decision


def _reason(gates: Sequence[Gate]) -> str:
    """The improvement gate's sentence, plus the sentences of the other gates that failed."""
    head = gates[0].detail
    failed = "; ".join(g.detail for g in gates[1:] if not g.passed)
    if not failed:
        return head
    if gates[0].passed:
        return f"{head.removesuffix(': promoted')}, but a gate failed: {failed}: not promoted"
    return f"{head}; also failed: {failed}"


def data_digest_differs(
    champion: ModelEntry,
    candidate: Candidate,
    champion_metrics: Mapping[str, float] | None,
) -> bool:
    """True when the stored champion numbers come from other evaluation data."""
    return (
        champion_metrics is None
        and bool(champion.data_digest)
        and bool(candidate.data_digest)
        and champion.data_digest != candidate.data_digest
    )


def _champion_value(
    champion: ModelEntry | None,
    primary_metric: str,
    champion_metrics: Mapping[str, float] | None,
) -> float | None:
    if champion is None:
        return None
    source = champion_metrics if champion_metrics is not None else champion.metrics
    value = source.get(primary_metric)
    return None if value is None else float(value)


def improvement_gate(
    value: float,
    champ_value: float | None,
    champion: ModelEntry | None,
    metric: str,
    margin: float,
) -> Gate:
    """The ``improvement`` gate: strictly better than the champion, by at least ``margin``."""

    def gate(passed: bool, detail: str) -> Gate:
        return Gate(name="improvement", value=value, threshold=threshold, passed=passed, detail=detail)

    threshold = None if champ_value is None else champ_value + margin
    if not math.isfinite(value):
        return gate(False, f"candidate {metric} is {value}, not a finite number: not promoted")
    if champion is None:
        return gate(True, f"no champion yet: candidate becomes champion with {metric}={value:.4f}")
    if champ_value is None or not math.isfinite(champ_value):
        return gate(
            False,
            f"champion {champion.id} has no finite {metric} to compare with "
            f"(candidate {value:.4f}): champion kept; re-measure it or pass champion_metrics",
        )
    gain = value - champ_value
    # A tie is not an improvement even with margin 0: replacing a champion needs evidence.
    if gain > 0 and gain >= margin - 1e-12:
        return gate(
            True,
            f"candidate {metric}={value:.4f} beats champion {champion.id} {metric}={champ_value:.4f} "
            f"by {gain:+.4f} (> 0 and >= {margin:.4f}): promoted",
        )
    return gate(
        False,
        f"candidate {metric}={value:.4f} vs champion {champion.id} {metric}={champ_value:.4f}: "
        f"gain {gain:+.4f}, required > 0 and >= {margin:.4f}: champion kept",
    )
