"""The GPU stage as its own deployment: what the pipeline sends and what it gets back.

``training_pipeline`` (on the cpu pool) calls :func:`run_gpu_stage` when
``config.orchestration.train_deployment`` is set. That creates a flow run of the
``train_stage`` flow (``flows/operations.py``) on the gpu pool with ``run_deployment``, waits for
it, and returns its :class:`GpuStageResult`. The remote flow calls the *same* ``train`` task
(and ``benchmark`` + ``promote`` when the benchmark device is a GPU), so the content-based cache
keys are the ones an in-process run uses. Both sides share the data root (``PYROBLUR_DATA_DIR``)
and Prefect's result storage: the child's result is read back from it.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Completed, Failed
from pydantic import BaseModel, Field

from pyroblur.config import BenchmarkConfig, PipelineConfig
from pyroblur.manifests import BenchmarkManifest, ExportManifest, PromotionManifest, TrainManifest


class RemoteStageError(RuntimeError):
    """The GPU stage's flow run did not complete."""


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


def _settle_link(run: FlowRun, result: GpuStageResult | None) -> None:
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


def run_gpu_stage(states: dict[str, str], config: PipelineConfig, dataset: ExportManifest) -> GpuStageResult:
    """Run the GPU stage as deployment ``config.orchestration.train_deployment`` and wait for it.

    Records each remote stage's state name in ``states`` (``train``: ``Completed`` or
    ``Cached``, as in an in-process run).

    Raises:
        RemoteStageError: the remote run failed, crashed or was cancelled (its message is kept).
    """
    orch = config.orchestration
    if not orch.train_deployment:
        raise ValueError("config.orchestration.train_deployment is not set")
    log = get_run_logger()
    params = gpu_stage_parameters(config, dataset)
    stages = "train, benchmark, promote" if params["benchmark_config"] else "train"
    log.info("GPU stage (%s) runs as deployment %s", stages, orch.train_deployment)
    run = run_deployment(orch.train_deployment, parameters=params, timeout=None, poll_interval=orch.poll_seconds)
    state = run.state
    if state is None or not state.is_completed():
        name = state.name if state else "unknown"
        _settle_link(run, None)
        states["train"] = name
        raise RemoteStageError(
            f"GPU stage flow run '{run.name}' ({orch.train_deployment}) ended {name}: {state.message if state else ''}"
        )
    result = state.result()
    if not isinstance(result, GpuStageResult):
        raise RemoteStageError(
            f"GPU stage flow run '{run.name}' returned {type(result).__name__}, not GpuStageResult: "
            "are both pools on the same code version and result storage?"
        )
    states.update(result.states)
    _settle_link(run, result)
    log.info("GPU stage flow run '%s' finished: %s", run.name, result.states)
    return result
