"""A local model registry: one JSON file, champion / challenger / retired models.

The file is the source of truth; it is rewritten atomically (temporary file in the same
directory, ``fsync``, ``os.replace``) under an exclusive ``fcntl`` lock on a sibling
``<name>.lock`` file, so concurrent processes on one host (or on an NFS/volume that supports
POSIX locks) never lose an update. A registry file that does not parse raises
:class:`CorruptRegistryError` naming the file and is never overwritten.

Weights are copied into ``<registry dir>/models/<id>/`` so that cleaning ``runs/`` never
breaks the champion; paths inside the registry are stored relative to the registry's
directory so that the data volume can be mounted elsewhere.

The champion's ONNX export (``models/<id>/<stem>.onnx``, made by
:mod:`pyroblur.registry.export` when a model is promoted) is recorded in its entry with its
sha256 and the sha256 of the gated ``.pt`` it was exported from; :func:`champion_files` hands
it out only when the file still has that sha256 (anonymization on a CPU runs it without torch).

Optional MLflow mirror: when ``MLFLOW_TRACKING_URI`` is set, each registered candidate is also
logged as an MLflow run (params, metrics, weights as an artifact) and registered as a version of
an MLflow model; the champion gets the ``champion`` alias. MLflow is imported lazily and any
MLflow failure is a warning, never a failed promotion.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import shutil
import tempfile
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

logger = logging.getLogger(__name__)

Status = Literal["champion", "challenger", "retired"]
SCHEMA_VERSION = 1
MLFLOW_MODEL_NAME = os.environ.get("PYROBLUR_MLFLOW_MODEL_NAME", "pyroblur-detector")


class RegistryError(PermanentError):
    """Base error of the model registry."""


class CorruptRegistryError(RegistryError):
    """The registry file exists but is not a valid registry; it is left untouched."""


class UngatedChampionError(RegistryError):
    """The champion's entry has no record of passed promotion gates: it is not used by default."""


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
        weights: path of the weights, relative to the registry's directory when inside it.
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

    def gates_passed(self) -> bool:
        """True when the entry records gates and every one of them passed."""
        return bool(self.gates) and all(g.passed for g in self.gates)


class RegistryFile(BaseModel):
    """The whole registry file."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    schema_version: int = SCHEMA_VERSION
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


def _read(registry_path: Path) -> RegistryFile:
    if not registry_path.exists():
        return RegistryFile()
    try:
        reg = RegistryFile.model_validate_json(registry_path.read_bytes())
    except ValidationError as exc:
        raise CorruptRegistryError(
            f"model registry {registry_path} is not a valid registry file (left untouched; "
            f"fix or move it away): {exc.errors()[0]['msg'] if exc.errors() else exc}"
        ) from exc
    if reg.schema_version != SCHEMA_VERSION:
        raise CorruptRegistryError(
            f"model registry {registry_path} has schema_version {reg.schema_version}, this code reads {SCHEMA_VERSION}"
        )
    if sum(m.status == "champion" for m in reg.models) > 1:
        raise CorruptRegistryError(f"model registry {registry_path} has more than one champion")
    return reg


def load_registry(registry_path: Path) -> RegistryFile:
    """Read the registry (empty if the file does not exist).

    No lock and no file is created: writers replace the file atomically, so a reader sees the
    old or the new registry, never a mix, and looking up a champion leaves the disk as it was.

    Raises:
        CorruptRegistryError: the file exists but does not parse.
    """
    return _read(Path(registry_path))


def _resolve(registry_path: Path, weights: str) -> Path:
    p = Path(weights)
    return p if p.is_absolute() else registry_path.parent / p


@dataclass(frozen=True)
class ChampionFiles:
    """The gated champion's files, as :func:`champion_files` found them.

    Attributes:
        entry: the champion's registry entry (its gates passed).
        weights: absolute path of its ``.pt`` weights (may be missing: callers check).
        onnx: absolute path of its ONNX export when one is recorded and the file has the
            recorded sha256; ``None`` otherwise.
        onnx_problem: why ``onnx`` is ``None`` (no export recorded, file missing, sha256
            mismatch), one sentence naming the file; empty when ``onnx`` is set.
    """

    entry: ModelEntry
    weights: Path
    onnx: Path | None
    onnx_problem: str


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
    path = _resolve(Path(registry_path), record.path)
    if not record.source_sha256.startswith(entry.id):
        return None, (
            f"the ONNX record of model {entry.id} names source weights {record.source_sha256[:16]}, "
            "not this model: not used"
        )
    if not path.is_file():
        return None, f"the ONNX export {path} of model {entry.id} is missing"
    actual = sha256_file(path)
    if actual != record.sha256:
        return None, (
            f"the ONNX export {path} of model {entry.id} has sha256 {actual[:16]}..., the registry "
            f"recorded {record.sha256[:16]}...: changed since export, not used"
        )
    return path, ""


def champion_files(registry_path: Path, *, check_onnx: bool = True) -> ChampionFiles | None:
    """The gated champion's ``.pt`` and, when ``check_onnx``, its verified ONNX export.

    Fails closed like :func:`champion_weights`. The ONNX is hashed and compared with the
    sha256 recorded at export; a missing, changed or foreign file is reported in
    ``onnx_problem`` and never handed out.

    Raises:
        CorruptRegistryError: the registry file exists but does not parse.
        UngatedChampionError: the champion lacks a passed gate record.
    """
    registry_path = Path(registry_path)
    champion = _gated_champion(registry_path)
    if champion is None:
        return None
    onnx, problem = verified_onnx(registry_path, champion) if check_onnx else (None, "not checked")
    return ChampionFiles(
        entry=champion, weights=_resolve(registry_path, champion.weights), onnx=onnx, onnx_problem=problem
    )


def champion_weights(registry_path: Path) -> Path | None:
    """Absolute path of the champion's weights, or ``None`` when there is no champion.

    Fails closed: a champion whose entry does not record passed promotion gates (written before
    gates existed, or edited by hand) is refused rather than used to anonymize.

    Raises:
        CorruptRegistryError: the registry file exists but does not parse.
        UngatedChampionError: the champion lacks a passed gate record (the message says which).
    """
    registry_path = Path(registry_path)
    champion = _gated_champion(registry_path)
    if champion is None:
        return None
    path = _resolve(registry_path, champion.weights)
    if not path.exists():
        logger.warning("champion %s weights %s are missing", champion.id, path)
    return path


def record_onnx(
    registry_path: Path,
    model_id: str,
    exported: Path,
    *,
    source_sha256: str,
    imgsz: int,
    exporter: str = "",
) -> OnnxExport:
    """Move ``exported`` to ``models/<id>/<stem>.onnx`` and record it in the entry ``model_id``.

    The file is hashed first; the move and the registry update happen together under the
    registry lock, so two exports of the same model never leave a record that names the
    other's file.

    Raises:
        KeyError: no entry ``model_id`` in the registry.
        ValueError: ``source_sha256`` is not the sha256 of that entry's weights.
        CorruptRegistryError: the registry file exists but does not parse.
    """
    registry_path = Path(registry_path)
    if not source_sha256.startswith(model_id):
        raise ValueError(f"source sha256 {source_sha256[:16]} is not that of model {model_id}")
    digest = sha256_file(exported)
    with _locked(registry_path):
        reg = _read(registry_path)
        entry = reg.get(model_id)
        if entry is None:
            raise KeyError(f"model {model_id} is not in the registry {registry_path}")
        dest = registry_path.parent / "models" / model_id / f"{Path(entry.weights).stem}.onnx"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(exported, dest)
        record = OnnxExport(
            path=dest.relative_to(registry_path.parent).as_posix(),
            sha256=digest,
            source_sha256=source_sha256,
            imgsz=imgsz,
            exporter=exporter,
            exported_at=datetime.now(UTC),
        )
        entry.onnx = record
        write_atomic(registry_path, reg.model_dump_json(indent=2) + "\n")
    logger.info("registry %s: model %s exported to ONNX %s (sha256 %s)", registry_path, model_id, dest, digest[:16])
    return record


def _store_weights(registry_path: Path, weights: Path, model_id: str) -> str:
    """Copy weights into ``models/<id>/`` (atomically) and return the relative path."""
    dest_dir = registry_path.parent / "models" / model_id
    dest = dest_dir / weights.name
    if not dest.exists():
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{weights.name}.", dir=dest_dir)
        os.close(fd)
        shutil.copyfile(weights, tmp)
        os.replace(tmp, dest)
    return dest.relative_to(registry_path.parent).as_posix()


def promote_if_better(
    registry_path: Path,
    candidate: Candidate,
    primary_metric: str,
    min_improvement: float = 0.0,
    champion_metrics: Mapping[str, float] | None = None,
    copy_weights: bool = True,
    gates: Sequence[Gate] = (),
) -> Decision:
    """Register ``candidate`` and make it the champion only if every gate passes.

    The ``improvement`` gate is decided here, under the registry lock: the first model passes
    it; otherwise the candidate must be *strictly* better than the champion on
    ``primary_metric`` (higher is better) and by at least ``min_improvement`` (a tie is never
    better, whatever the margin), with a finite value. A champion that lacks the metric is
    never replaced. ``gates`` are the policy's other gates (evidence, recall floors; see
    :mod:`pyroblur.registry.promotion`), measured by the caller; any failed gate keeps the
    champion. Every gate is recorded in the entry, so :func:`champion_weights` can refuse a
    champion without a passed record. The old champion becomes ``retired``; a losing
    candidate is kept as ``challenger``. Offering weights that are already registered changes
    nothing and repeats their standing (safe for task retries).

    Args:
        registry_path: the registry JSON file (created if missing, with its directory).
        candidate: the new model and its metrics.
        primary_metric: metric name in ``candidate.metrics`` to compare, e.g. ``"mAP50-95"``.
        min_improvement: required absolute margin in the metric's units (e.g. 0.005).
        champion_metrics: the champion's metrics re-measured on the candidate's evaluation
            data; when given they replace the stored ones for this comparison (use it when the
            test set changed, since stored numbers from other data are not comparable).
        copy_weights: copy the weights into the registry's ``models/`` folder.
        gates: further gates, each already decided.

    Returns:
        The :class:`Decision`, with both values, every gate and the reason.

    Raises:
        KeyError: ``primary_metric`` is missing from the candidate's metrics.
        FileNotFoundError: the candidate's weights do not exist.
        CorruptRegistryError: the registry file exists but does not parse (it is not touched).
    """
    registry_path = Path(registry_path)
    if primary_metric not in candidate.metrics:
        raise KeyError(
            f"candidate metrics lack the primary metric {primary_metric!r}; have {sorted(candidate.metrics)}"
        )
    weights = Path(candidate.weights)
    if not weights.is_file():
        raise FileNotFoundError(f"candidate weights {weights} do not exist")
    model_id = sha256_file(weights)[:16]
    value = float(candidate.metrics[primary_metric])

    with _locked(registry_path):
        reg = _read(registry_path)
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

        stored = _store_weights(registry_path, weights, model_id) if copy_weights else str(weights.resolve())
        entry = ModelEntry(
            id=model_id,
            weights=stored,
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
        if promoted and champion is not None:
            champion.status = "retired"
        reg.models.append(entry)
        write_atomic(registry_path, reg.model_dump_json(indent=2) + "\n")

    logger.info("registry %s: %s", registry_path, decision.reason)
    for g in all_gates:
        logger.info("gate %-28s %s: %s", g.name, "pass" if g.passed else "FAIL", g.detail)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        log_to_mlflow(entry, decision, _resolve(registry_path, entry.weights))
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


def _mlflow_key(name: str) -> str:
    """MLflow metric names allow alphanumerics, ``_ - . space / :``; map the rest to ``_``."""
    return re.sub(r"[^\w\-. /:]", "_", name)


def log_to_mlflow(entry: ModelEntry, decision: Decision, weights: Path) -> None:
    """Mirror one registration to MLflow (``MLFLOW_TRACKING_URI``); failures are warnings.

    Logs params (digests, primary metric), finite metrics, the weights as an artifact, registers
    a model version of ``PYROBLUR_MLFLOW_MODEL_NAME`` (default ``pyroblur-detector``) and, when
    promoted, points its ``champion`` alias at that version.
    """
    try:
        import mlflow
    except ImportError:
        logger.warning(
            "MLFLOW_TRACKING_URI is set but mlflow is not installed: "
            "`pip install mlflow-skinny` to mirror the registry to MLflow"
        )
        return
    try:
        with mlflow.start_run(run_name=f"pyroblur-{entry.id}") as run:
            mlflow.log_params(
                {
                    "model_id": entry.id,
                    "config_digest": entry.config_digest,
                    "data_digest": entry.data_digest,
                    "primary_metric": entry.primary_metric,
                    "min_improvement": decision.min_improvement,
                }
            )
            mlflow.log_metrics({_mlflow_key(k): v for k, v in entry.metrics.items() if math.isfinite(v)})
            mlflow.set_tags({"pyroblur.status": entry.status, "pyroblur.reason": decision.reason})
            mlflow.log_artifact(str(weights), artifact_path="weights")
            uri = f"runs:/{run.info.run_id}/weights/{weights.name}"
        version = mlflow.register_model(uri, MLFLOW_MODEL_NAME)
        if decision.promoted:
            mlflow.MlflowClient().set_registered_model_alias(MLFLOW_MODEL_NAME, "champion", version.version)
    except Exception as exc:  # noqa: BLE001 - MLflow is a mirror: never fail the promotion over it
        logger.warning(
            "MLflow logging failed (%s: %s); the JSON registry is unaffected",
            type(exc).__name__,
            exc,
        )
