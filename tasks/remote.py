"""The GPU stage as its own deployment: what the pipeline sends, how long it waits, what it gets back.

``training_pipeline`` (on the cpu pool) calls :func:`run_gpu_stage` when
``config.orchestration.train_deployment`` is set. That creates a flow run of the
``train_stage`` flow (``flows/operations.py``) on the gpu pool with ``run_deployment``, waits for
it (bounded: ``orchestration.stage_start_timeout_minutes`` to be picked up by a gpu worker,
``orchestration.stage_timeout_hours`` in all) and returns its :class:`GpuStageResult`. The
remote flow calls the *same* tasks, so the content-based cache keys are the ones an in-process
run uses. Both sides share the data root (``PYROBLUR_DATA_DIR``) and Prefect's result storage:
the child's result is read back from it.

A gpu worker that dies mid-run leaves its flow run Running: the ``pyroblur-crash-silent-runs``
automation (``deployments/setup.py``, created by ``make deploy``) marks it Crashed when its
heartbeats stop, and the wait here then ends with :class:`GpuStageError`.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Cancelled, Cancelling, Completed, Failed
from pydantic import BaseModel, Field

from pyroblur.config import BenchmarkConfig, OrchestrationConfig, PipelineConfig
from pyroblur.core.errors import PermanentError, TransientError
from pyroblur.manifests import BenchmarkManifest, ExportManifest, PromotionManifest, TrainManifest

RECOVERY_HINT = (
    "see docs/operations.md, 'A worker died': start a gpu worker (make worker POOL=gpu), then press "
    "Retry on this run; training resumes from its last checkpoint"
)


class GpuStageError(PermanentError):
    """The GPU stage's flow run ended Failed, Crashed or Cancelled (its message is kept)."""


class GpuStageTimeout(TransientError):
    """The GPU stage's flow run was not started, or not finished, in the configured time."""


class GpuStageResult(BaseModel):
    """What the GPU stage did: each of its stages' final state name, and their manifests."""

    states: dict[str, str] = Field(default_factory=dict)
    model: TrainManifest | None = None
    report: BenchmarkManifest | None = None
    promotion: PromotionManifest | None = None


def benchmarks_on_gpu(benchmark: BenchmarkConfig) -> bool:
    """Whether benchmark (and promotion, which may re-evaluate the champion) need the GPU pool."""
    return benchmark.device.strip().lower() != "cpu"


def gpu_stage_parameters(config: PipelineConfig, dataset: ExportManifest) -> dict[str, Any]:
    """Parameters of the ``train_stage`` flow run, as JSON (the deployment enforces its schema)."""
    return {
        "train_config": config.train.model_dump(mode="json"),
        "dataset": dataset.model_dump(mode="json"),
        "benchmark_config": config.benchmark.model_dump(mode="json") if benchmarks_on_gpu(config.benchmark) else None,
        "dataset_name": config.curation.dataset_name,
    }


def settle_link(run: FlowRun, result: GpuStageResult | None) -> None:
    """Give the parent's placeholder task run of the remote flow run a final state.

    ``run_deployment`` links the child to the parent through a task run it leaves Pending; the
    UI (and a reader of the parent's task runs) should see what the stage did instead: "Cached"
    when every remote stage was a cache hit, else the child's final state.
    """
    if run.parent_task_run_id is None or run.state is None:
        return
    if result is not None and result.states and set(result.states.values()) == {"Cached"}:
        state = Completed(name="Cached", message=f"{run.name}: every stage cached")
    elif run.state.is_completed():
        state = Completed(message=f"flow run {run.name}")
    else:
        state = Failed(message=f"flow run {run.name} ended {run.state.name}")
    with get_client(sync_client=True) as client:
        client.set_task_run_state(run.parent_task_run_id, state, force=True)


def _give_up(flow_run_id: UUID, why: str) -> FlowRun:
    """Stop waiting for a child run: one that never started is Cancelled at once (its slot and
    queue place are freed); a Running one is asked to cancel (a live worker kills it; a dead
    worker's run is Crashed by the heartbeat automation)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and not run.state.is_final():
            started = run.state.is_running()
            state = Cancelling(message=why) if started else Cancelled(message=why)
            client.set_flow_run_state(flow_run_id, state, force=True)
        return client.read_flow_run(flow_run_id)


def wait_for_run(
    flow_run_id: UUID, orch: OrchestrationConfig, *, label: str = "GPU stage", subject: str | None = None
) -> FlowRun:
    """Poll a flow run until it is final, with two bounds. ``label`` names the run in errors
    (``"GPU stage"``, ``"shard 2/3"``), ``subject`` the deployment (default: the GPU stage's).

    Raises:
        GpuStageTimeout: not Running within ``stage_start_timeout_minutes`` (no gpu worker, pool
            full) or not final within ``stage_timeout_hours``; the child is cancelled first.
    """
    subject = subject or orch.train_deployment
    start = time.monotonic()
    start_limit = orch.stage_start_timeout_minutes * 60
    total_limit = orch.stage_timeout_hours * 3600
    started = False
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            state = run.state
            if state is not None and state.is_final():
                return run
            started = started or (state is not None and state.is_running())
            waited = time.monotonic() - start
            if not started and waited > start_limit:
                why = f"no gpu worker started it within {orch.stage_start_timeout_minutes:g} min"
                _give_up(flow_run_id, why)
                raise GpuStageTimeout(
                    f"{label} flow run '{run.name}': {why}",
                    subject=subject,
                    hint="is a gpu worker running (make worker POOL=gpu) and is the pool's slot free?",
                )
            if waited > total_limit:
                why = f"not finished within {orch.stage_timeout_hours:g} h"
                _give_up(flow_run_id, why)
                raise GpuStageTimeout(
                    f"{label} flow run '{run.name}': {why}",
                    subject=subject,
                    hint="raise orchestration.stage_timeout_hours for longer trainings",
                )
            time.sleep(orch.poll_seconds)


def run_gpu_stage(states: dict[str, str], config: PipelineConfig, dataset: ExportManifest) -> GpuStageResult:
    """Run the GPU stage as deployment ``config.orchestration.train_deployment`` and wait for it.

    Records each remote stage's state name in ``states`` (``train``: ``Completed`` or
    ``Cached``, as in an in-process run).

    Raises:
        GpuStageError: the remote run failed, crashed or was cancelled (its message is kept).
        GpuStageTimeout: see :func:`wait_for_run`.
    """
    orch = config.orchestration
    if not orch.train_deployment:
        raise ValueError("config.orchestration.train_deployment is not set")
    log = get_run_logger()
    params = gpu_stage_parameters(config, dataset)
    stages = "train, benchmark, promote" if params["benchmark_config"] else "train"
    created = run_deployment(orch.train_deployment, parameters=params, timeout=0)
    log.info("GPU stage (%s) runs as flow run '%s' of deployment %s", stages, created.name, orch.train_deployment)
    try:
        run = wait_for_run(created.id, orch)
    except GpuStageTimeout:
        states["train"] = "TimedOut"
        with get_client(sync_client=True) as client:
            settle_link(client.read_flow_run(created.id), None)
        raise
    state = run.state
    if state is None or not state.is_completed():
        name = state.name if state else "unknown"
        settle_link(run, None)
        states["train"] = name
        raise GpuStageError(
            f"GPU stage flow run '{run.name}' ended {name}: {state.message if state else ''}",
            subject=orch.train_deployment,
            hint=RECOVERY_HINT,
        )
    result = state.result()
    if not isinstance(result, GpuStageResult):
        raise GpuStageError(
            f"GPU stage flow run '{run.name}' returned {type(result).__name__}, not GpuStageResult",
            subject=orch.train_deployment,
            hint="are both pools on the same code version and result storage?",
        )
    states.update(result.states)
    settle_link(run, result)
    log.info("GPU stage flow run '%s' finished: %s", run.name, result.states)
    return result
