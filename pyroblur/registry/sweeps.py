"""Hyperparameter sweeps, the record side: the Optuna study in a database next to MLflow's, a
sweep's MLflow run with one child run per trial, and the comparison (table and plot).

Where the study lives: ``PYROBLUR_OPTUNA_STORAGE`` when set (any SQLAlchemy URL Optuna takes,
e.g. ``postgresql://user:pw@mlflow-db:5432/optuna`` on the MLflow server's Postgres), else beside
the embedded MLflow store: ``<data root>/mlflow/optuna.db`` (SQLite). Never in MLflow's own
database: Optuna and MLflow both keep their schema version in a table named
``alembic_version``, so one would take the other's tables for its own.

A study survives the process that drives it. Every trial is asked, reported and told through the
database, so a trial running as a flow run on a gpu worker reports its epochs to the same study
the driver reads. When a sweep stops (SIGTERM, Ctrl+C, a crash) its running trials are marked
failed with the system attribute ``pyroblur:interrupted``; the next run of the same sweep puts
each interrupted trial's parameters back in the queue (``enqueue_trial``, at most
``sweep.max_requeues`` times) and counts it as not done, so finished trials (completed, pruned,
failed for good) are never run again and the interrupted one resumes from its ``last.pt``
(its run folder depends on its parameters and data only).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import html
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroblur.config import PruningConfig, SweepConfig
from pyroblur.core.errors import ConfigurationError, PermanentError
from pyroblur.manifests import TrialScore, TrialTraining
from pyroblur.registry import tracking
from pyroblur.training.sweep import distributions, grid_point, make_pruner, make_sampler

logger = logging.getLogger(__name__)

STORAGE_ENV = "PYROBLUR_OPTUNA_STORAGE"
#: System attributes of a trial (Optuna keeps them with the trial in the study's database).
#: (``requeue_of``: the first trial of those parameters; ``retry_of``: the interrupted trial it replaces)
INTERRUPTED, REQUEUE_OF, RETRY_OF = "pyroblur:interrupted", "pyroblur:requeue_of", "pyroblur:retry_of"
#: MLflow tags of a sweep's runs.
SWEEP_TAG, ROLE_TAG, TRIAL_TAG, STATE_TAG = "pyroblur.sweep", "pyroblur.role", "pyroblur.trial", "optuna.trial.state"
#: User attributes the trial runner records on each trial (the comparison table's columns).
ATTRS = ("worst_coverage", "map50_95", "epochs", "planned_epochs", "pruned_at", "seconds", "seconds_saved",
         "mlflow_run_id", "weights")  # fmt: skip


class SweepStorageError(ConfigurationError):
    """Where the study should live is not known or not usable (names the URL and what to set)."""


class SweepBusyError(PermanentError):
    """Another process drives the same study (a second driver would ask duplicate trials)."""


def storage_url(root: Path) -> str:
    """The study database's URL: ``PYROBLUR_OPTUNA_STORAGE``, or ``optuna.db`` beside the
    embedded (or ``sqlite:///``) MLflow store.

    Raises:
        SweepStorageError: MLflow is a server and ``PYROBLUR_OPTUNA_STORAGE`` is not set.
    """
    url = os.environ.get(STORAGE_ENV, "").strip()
    if url:
        return url
    store = tracking.store_for(root)
    if store.db_path is not None:
        return f"sqlite:///{store.db_path.parent / 'optuna.db'}"
    raise SweepStorageError(
        f"MLflow is the server {store.uri}: set {STORAGE_ENV} to a database for the sweep's study on the "
        "same database server",
        subject=STORAGE_ENV,
        hint="e.g. postgresql://mlflow:mlflow@mlflow-db:5432/optuna after `CREATE DATABASE optuna` (not MLflow's "
        "own database: both keep an alembic_version table); docs/sweep.md",
    )


def _storage(url: str) -> Any:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # several processes (the driver, trials on workers) write it: wait for a lock, do not fail
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises many types for a bad URL or server
        raise SweepStorageError(
            f"the sweep's study database {_safe(url)} is not usable: {type(exc).__name__}: {str(exc)[:300]}",
            subject=_safe(url),
            hint=f"check {STORAGE_ENV} (or the data root's mlflow/ folder) and that the database exists",
            transient=True,
        ) from exc


def _safe(url: str) -> str:
    """``url`` without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def open_study(root: Path, name: str, pruning: PruningConfig | None = None, sampler: Any = None) -> Any:
    """The study ``name`` (created when missing, maximizing), with the config's pruner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = make_pruner(pruning) if pruning is not None else optuna.pruners.NopPruner()
    return optuna.create_study(
        storage=_storage(storage_url(root)),
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=sampler or optuna.samplers.RandomSampler(),
        pruner=pruner,
    )


def load_trial(root: Path, name: str, trial_id: int, pruning: PruningConfig) -> Any:
    """An ``optuna.Trial`` handle on a trial asked by the driver (in another process, maybe):
    its reports and pruning decisions go through the study's database."""
    import optuna

    return optuna.trial.Trial(open_study(root, name, pruning), trial_id)


@contextlib.contextmanager
def driving(root: Path, name: str) -> Iterator[None]:
    """Hold the lock of study ``name`` (``<root>/sweeps/<name>.lock``) while driving it.

    Raises:
        SweepBusyError: another process drives it.
    """
    folder = Path(root) / "sweeps"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepBusyError(
                f"another process drives the sweep study '{name}'",
                subject=str(folder / f"{name}.lock"),
                hint="wait for it, or stop it: the next run continues the study",
            ) from None
        yield
    finally:
        os.close(fd)


def _is_interrupted(trial: Any) -> bool:
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and bool(trial.system_attrs.get(INTERRUPTED))


def mark_interrupted(study: Any, numbers: Sequence[int], why: str) -> list[int]:
    """Mark the still-running trials among ``numbers`` failed and interrupted; returns those marked."""
    from optuna.trial import TrialState

    marked = []
    for t in study.get_trials(deepcopy=False):
        if t.number in numbers and t.state == TrialState.RUNNING:
            study._storage.set_trial_system_attr(t._trial_id, INTERRUPTED, why)
            with contextlib.suppress(Exception):  # finished meanwhile (by its worker): keep that
                study.tell(t.number, state=TrialState.FAIL)
                marked.append(t.number)
    return marked


def recover(study: Any, max_requeues: int, running_too: bool = True) -> list[tuple[int, dict[str, Any]]]:
    """Each interrupted trial not yet requeued has its parameters queued again, up to
    ``max_requeues`` times per original trial; with ``running_too`` (before driving a study)
    trials left running by a driver that died are interrupted first (no one else drives it:
    :func:`driving`). Returns ``(number, params)`` of the trials requeued now."""
    from optuna.trial import TrialState

    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if running and running_too:
        mark_interrupted(study, running, "left running by a sweep that stopped")
    requeued = []
    trials = study.get_trials(deepcopy=False)
    retried = {o.system_attrs.get(RETRY_OF) for o in trials}
    for t in trials:
        if not _is_interrupted(t) or t.number in retried:
            continue
        origin = int(t.system_attrs.get(REQUEUE_OF, t.number))
        times = sum(1 for o in trials if o.system_attrs.get(REQUEUE_OF) == origin)
        if times >= max_requeues:
            logger.warning("trial %d was interrupted %d times: not tried again", origin, times + 1)
            continue
        study.enqueue_trial(dict(t.params))
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[-1]
        study._storage.set_trial_system_attr(waiting._trial_id, REQUEUE_OF, origin)
        study._storage.set_trial_system_attr(waiting._trial_id, RETRY_OF, t.number)
        requeued.append((t.number, dict(t.params)))
    return requeued


@dataclass(frozen=True)
class Progress:
    """Where a study stands: ``done`` trials count against ``n_trials`` (completed, pruned,
    failed for good); ``index`` numbers the next trial for its sampler's seed (every trial so
    far but the interrupted ones); ``waiting``: queued parameters not started yet."""

    done: int
    index: int
    running: int
    waiting: int


def progress(study: Any) -> Progress:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = sum(1 for t in trials if t.state.is_finished() and not _is_interrupted(t))
    running = sum(1 for t in trials if t.state == TrialState.RUNNING)
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    index = sum(1 for t in trials if not _is_interrupted(t) and t.state != TrialState.WAITING)
    return Progress(done=done, index=index, running=running, waiting=waiting)


def ask(study: Any, sweep: SweepConfig) -> Any:
    """The next trial, its parameters sampled now (a queued one's taken as they were)."""
    where = progress(study)
    study.sampler = make_sampler(sweep, where.index)
    if sweep.strategy == "grid" and not where.waiting:  # a requeued trial goes first
        study.enqueue_trial(grid_point(sweep, where.index))
    return study.ask(distributions(sweep))


def record_result(
    study: Any, number: int, training: TrialTraining, score: TrialScore | None, mlflow_run_id: str
) -> str:
    """Record a trial's figures as its user attributes and tell the study how it ended
    (``COMPLETE`` with the objective, or ``PRUNED``); returns the state's name. A trial the
    driver meanwhile marked interrupted keeps that mark."""
    from optuna.trial import TrialState

    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    if trial.state.is_finished():  # the driver marked it interrupted meanwhile: keep that record
        logger.warning("trial %d ended after it was marked %s: not recorded", number, trial.state.name)
        return "INTERRUPTED" if _is_interrupted(trial) else trial.state.name
    attrs = {
        "worst_coverage": score.worst_coverage if score else None,
        "map50_95": score.map50_95 if score else None,
        "coverage": score.coverage if score else None,
        "epochs": training.epochs,
        "planned_epochs": training.planned_epochs,
        "pruned_at": training.pruned_at,
        "seconds": round(training.seconds, 2),
        "seconds_saved": round(training.seconds_saved, 2),
        "mlflow_run_id": mlflow_run_id,
        "weights": training.weights,
        "run_dir": training.run_dir,
    }
    for k, v in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, k, v)
    state = TrialState.PRUNED if training.pruned or score is None else TrialState.COMPLETE
    try:
        study.tell(number, score.value if state == TrialState.COMPLETE and score else None, state=state)
    except Exception as exc:  # noqa: BLE001 - optuna raises RuntimeError/ValueError for a finished trial
        now = next(t for t in study.get_trials(deepcopy=False) if t.number == number).state
        logger.warning("trial %d was already %s when it ended %s: %s", number, now.name, state.name, exc)
        return now.name
    return state.name


def record_failure(study: Any, number: int, error: str) -> None:
    """Tell the study that trial ``number`` failed for good (``error`` kept as a user attribute)."""
    from optuna.trial import TrialState

    trial = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    with contextlib.suppress(Exception):  # marked interrupted meanwhile: that record stays
        study._storage.set_trial_user_attr(trial._trial_id, "error", error[:2000])
        study.tell(number, state=TrialState.FAIL)


# ------------------------------------------------------------------------------------------- MLflow


def _find(c: Any, store: tracking.MlflowStore, tags: Mapping[str, str]) -> str | None:
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = c.search_runs([tracking.experiment_id(store, c)], filter_string=flt, max_results=1)
    return runs[0].info.run_id if runs else None


def sweep_run(root: Path, name: str, params: Mapping[str, str]) -> str:
    """The sweep's MLflow run (found by its study name, or created), marked running."""
    store = tracking.store_for(root)
    c = tracking.client(store)
    tags = {SWEEP_TAG: name, ROLE_TAG: "sweep"}
    run_id = _find(c, store, tags)
    if run_id is None:
        run_id = c.create_run(tracking.experiment_id(store, c), run_name=f"sweep-{name}", tags=tags).info.run_id
    else:
        c.update_run(run_id, status="RUNNING")
    tracking._log_params(c, run_id, params)
    return run_id


def trial_run(root: Path, name: str, parent_run_id: str, number: int, params: Mapping[str, Any]) -> str:
    """Trial ``number``'s MLflow run: a child of the sweep's run (``mlflow.parentRunId``) with
    the trial's parameters (``trial.<name>``)."""
    store = tracking.store_for(root)
    c = tracking.client(store)
    tags = {SWEEP_TAG: name, ROLE_TAG: "trial", TRIAL_TAG: str(number)}
    run_id = _find(c, store, tags)
    if run_id is None:
        run_id = c.create_run(
            tracking.experiment_id(store, c),
            run_name=f"{name}-trial-{number}",
            tags={**tags, "mlflow.parentRunId": parent_run_id, STATE_TAG: "RUNNING"},
        ).info.run_id
    tracking._log_params(c, run_id, tracking.flatten("trial", dict(params)))
    return run_id


def log_trial(
    root: Path,
    run_id: str,
    state: str,
    training: TrialTraining | None,
    score: TrialScore | None,
    params: Mapping[str, str],
    error: str = "",
) -> None:
    """End trial run ``run_id``: its training (params, per-epoch series, weights; once), the
    objective and its parts, the state (MLflow status ``FINISHED`` when completed, ``KILLED``
    when pruned or interrupted, ``FAILED`` otherwise; Optuna's state as tag ``optuna.trial.state``).

    A completed trial's run is also tagged with its model id when no other run has it, so that
    the chosen trial's benchmark and model version land on this run (the registry finds a
    model's run by that tag)."""
    store = tracking.store_for(root)
    c = tracking.client(store)
    if training is not None:
        model_id = training.digest[:16]
        if state == "COMPLETE" and tracking.find_run(store, model_id, c) is None:
            c.set_tag(run_id, tracking.MODEL_ID_TAG, model_id)
        tracking.log_training(
            root, model_id, Path(training.run_dir), Path(training.weights), params,
            tags={"pyroblur.sha256": training.digest, "pyroblur.device": training.device}, run_id=run_id,
        )  # fmt: skip
        tracking._log_metrics(
            c, run_id, {"trial/epochs": training.epochs, "trial/seconds": training.seconds,
                        "trial/seconds_saved": training.seconds_saved},
        )  # fmt: skip
    if score is not None:
        figures = {"objective": score.value, "val/worst_coverage": score.worst_coverage, "val/map50_95": score.map50_95}
        figures.update({f"val/coverage/{k}": v for k, v in score.coverage.items() if v is not None})
        tracking._log_metrics(c, run_id, figures)
    c.set_tag(run_id, STATE_TAG, state)
    if error:
        c.set_tag(run_id, "pyroblur.trial.error", error[:5000])
    status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "INTERRUPTED": "KILLED"}.get(state, "FAILED")
    c.set_terminated(run_id, status=status)


def end_sweep_run(root: Path, run_id: str, status: str, metrics: Mapping[str, float], tags: Mapping[str, str],
                  folder: Path | None = None) -> None:  # fmt: skip
    """Log the sweep's figures and its comparison folder (table, plot) and set its status."""
    store = tracking.store_for(root)
    c = tracking.client(store)
    tracking._log_metrics(c, run_id, metrics)
    for k, v in tags.items():
        c.set_tag(run_id, k, v)
    if folder is not None and folder.is_dir():
        c.log_artifacts(run_id, str(folder), "comparison")
    c.set_terminated(run_id, status=status)


def trial_runs(root: Path, name: str) -> list[Any]:
    """The MLflow runs of study ``name``'s trials (for reports and tests)."""
    store = tracking.store_for(root)
    c = tracking.client(store)
    flt = f"tags.`{SWEEP_TAG}` = '{name}' and tags.`{ROLE_TAG}` = 'trial'"
    return list(c.search_runs([tracking.experiment_id(store, c)], filter_string=flt, max_results=10000))


# --------------------------------------------------------------------------------------- comparison


def comparison_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial, best first: number, state, objective, its parts, parameters, epochs,
    time and time saved, the MLflow run. Interrupted trials say so (their parameters ran again
    as a later trial)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = "INTERRUPTED" if _is_interrupted(t) else t.state.name
        last = max(t.intermediate_values.items())[1] if t.intermediate_values else None
        # a pruned trial's value is its last per-epoch figure (Optuna's rule): not an objective
        row: dict[str, Any] = {"trial": t.number, "state": state, "objective": t.value if state == "COMPLETE" else None}
        row.update({k: t.user_attrs.get(k) for k in ("worst_coverage", "map50_95")})
        row["last_epoch_figure"] = last
        row.update({f"param:{k}": v for k, v in sorted(t.params.items())})
        row.update({k: t.user_attrs.get(k) for k in ATTRS if k not in ("worst_coverage", "map50_95", "weights")})
        rows.append(row)
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 2, "FAIL": 3, "INTERRUPTED": 4}
    rows.sort(key=lambda r: (order.get(r["state"], 5), -(r["objective"] if r["objective"] is not None else -math.inf),
                             r["trial"]))  # fmt: skip
    return rows


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def save_comparison(study: Any, folder: Path) -> dict[str, Path]:
    """Write ``comparison.csv``, ``comparison.html``, ``sweep.png`` and ``study.json`` (the whole
    study, :func:`study_record`) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(study)
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with (folder / "comparison.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _cell(r.get(k)) for k in columns})
    best = rows[0]["trial"] if rows and rows[0]["state"] == "COMPLETE" else None
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr{}>{}</tr>".format(
            ' class="best"' if r["trial"] == best else "",
            "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns),
        )
        for r in rows
    )
    (folder / "comparison.html").write_text(
        f"<!doctype html><meta charset='utf-8'><title>Sweep {html.escape(study.study_name)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:13px}tr.best{background:#dfd}</style>"
        f"<h1>Sweep {html.escape(study.study_name)}</h1><p>Objective: the worst class's coverage at "
        "anonymization's operating point on the val split, plus 0.001 x mAP50-95 (tie-break). Best first; "
        "pruned trials have no objective (last_epoch_figure: their last per-epoch figure, mean val recall "
        "+ 0.001 x mAP50-95); interrupted trials ran again as a later trial.</p>"
        f"<table><tr>{head}</tr>{body}</table>"
    )
    plot = plot_study(study, folder / "sweep.png")
    (folder / "study.json").write_text(json.dumps(study_record(study), indent=2, default=str))
    return {"csv": folder / "comparison.csv", "html": folder / "comparison.html", "plot": plot,
            "study": folder / "study.json"}  # fmt: skip


def study_record(study: Any) -> dict[str, Any]:
    """The whole study as plain data: every trial's state, parameters, objective, per-epoch
    figures, recorded figures and our bookkeeping (interrupted, requeued), with its times."""
    return {
        "study_name": study.study_name,
        "direction": study.direction.name,
        "trials": [
            {
                "number": t.number,
                "state": "INTERRUPTED" if _is_interrupted(t) else t.state.name,
                "params": t.params,
                "value": t.value,
                "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                "user_attrs": t.user_attrs,
                "system_attrs": {k: v for k, v in t.system_attrs.items() if k.startswith("pyroblur:")},
                "started": t.datetime_start,
                "completed": t.datetime_complete,
            }
            for t in study.get_trials(deepcopy=False)
        ],
    }


def plot_study(study: Any, path: Path) -> Path:
    """The objective against each parameter (completed trials; pruned ones as ticks at the
    bottom) and over trials (with the best so far)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in study.get_trials(deepcopy=False) if not _is_interrupted(t)]
    done = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    names = sorted({k for t in trials for k in t.params})
    cols = min(3, len(names) + 1)
    rows = math.ceil((len(names) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    flat = list(axes.flat)
    values = [t.value for t in done]
    low = min(values) if values else 0.0
    for ax, name in zip(flat, names, strict=False):
        xs_all = [t.params[name] for t in trials if name in t.params]
        categorical = any(isinstance(x, (str, bool)) for x in xs_all)
        labels = sorted({str(x) for x in xs_all}) if categorical else []

        def pos(x: Any, categorical: bool = categorical, labels: list[str] = labels) -> float:
            return float(labels.index(str(x))) if categorical else float(x)

        ax.scatter([pos(t.params[name]) for t in done if name in t.params],
                   [t.value for t in done if name in t.params], label="completed")  # fmt: skip
        if pruned:
            ax.scatter([pos(t.params[name]) for t in pruned if name in t.params],
                       [low] * sum(1 for t in pruned if name in t.params), marker="x", color="red", label="pruned")  # fmt: skip
        if categorical:
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=8)
        elif any(getattr(t.distributions.get(name), "log", False) for t in trials):
            ax.set_xscale("log")  # a range sampled on a log scale
        ax.set_xlabel(name)
        ax.set_ylabel("objective")
    ax = flat[len(names)]
    ax.scatter([t.number for t in done], values, label="completed")
    best, running = [], -math.inf
    for t in sorted(done, key=lambda t: t.number):
        running = max(running, t.value)
        best.append((t.number, running))
    if best:
        ax.step([b[0] for b in best], [b[1] for b in best], where="post", color="green", label="best so far")
    if pruned:
        ax.scatter([t.number for t in pruned], [low] * len(pruned), marker="x", color="red", label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.legend(fontsize=8)
    for extra in flat[len(names) + 1 :]:
        extra.axis("off")
    fig.suptitle(f"Sweep {study.study_name}: objective = worst-class coverage + 0.001 x mAP50-95 (val)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
