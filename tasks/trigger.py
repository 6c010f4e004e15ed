"""Start a deployment's run on the Prefect server and wait for it (``pyroblur trigger``, the ops
demo): Prefect client handling, no wiring.

The server is ``PREFECT_API_URL`` or, when that is not set, the one ``make server`` starts
(``http://127.0.0.1:$PREFECT_PORT/api``, port 4200). It is checked first, so a missing server
is one line naming the URL instead of Prefect's ephemeral-server timeout a minute later.
``PREFECT_API_AUTH_STRING`` is sent when set (the compose stack's server asks for it).

    pyroblur trigger train --config configs/demo.yaml          # training on the gpu pool
    pyroblur trigger train --config configs/demo.yaml --inline  # training in the cpu pool's run
    pyroblur trigger retrain-weekly --config configs/pyroblur.yaml --wait 0   # do not wait
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import requests

from pyroblur.config import load_config
from pyroblur.core.errors import ConfigurationError, PermanentError

GPU_STAGE = "train_stage/train-stage"
#: Short names of prefect.yaml's deployments.
DEPLOYMENTS = {
    "train": "training_pipeline/train",
    "retrain-weekly": "retrain_weekly/retrain-weekly",
    "train-stage": "train_stage/train-stage",
    "anonymize": "anonymize_folder/anonymize",
    "sweep": "hyperparameter_sweep/sweep",
}
#: The deployment that runs a sweep's trials on the gpu pool.
SWEEP_TRIAL = "sweep_trial/sweep-trial"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def api_url() -> str:
    """``PREFECT_API_URL``, else ``make server``'s address."""
    return os.environ.get("PREFECT_API_URL") or f"http://127.0.0.1:{os.environ.get('PREFECT_PORT', '4200')}/api"


def _auth_headers() -> dict[str, str]:
    auth = os.environ.get("PREFECT_API_AUTH_STRING", "")
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}


def check_server(url: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URL, when no Prefect server answers there (or it refuses us)."""
    hint = "start one with `make server` in another terminal, or export PREFECT_API_URL=http://HOST:PORT/api"
    try:
        r = requests.get(f"{url.rstrip('/')}/health", headers=_auth_headers(), timeout=timeout)
    except requests.RequestException as exc:
        raise ConfigurationError(f"no Prefect server answers ({type(exc).__name__})", subject=url, hint=hint) from None
    if r.ok:  # /health answers without credentials: ask something that needs them
        r = requests.get(f"{url.rstrip('/')}/admin/version", headers=_auth_headers(), timeout=timeout)
    if r.status_code == 401:
        raise ConfigurationError(
            "the Prefect server refused the credentials"
            if _auth_headers()
            else "the Prefect server asks for credentials",
            subject=url,
            hint="export PREFECT_API_AUTH_STRING=user:password (the server's PREFECT_SERVER_API_AUTH_STRING)",
        )
    if not r.ok:
        raise ConfigurationError(f"the Prefect server answered HTTP {r.status_code}", subject=url, hint=hint)


def parameters_for(
    config: Path | None, overrides: list[str], params: list[str], train_deployment: str | None
) -> dict[str, Any]:
    """The run's parameters: ``config`` from a YAML file (validated here, with ``--set``
    overrides; ``train_deployment``, and for a sweep its trial deployment, filled in when the
    file has none) plus ``--param KEY=JSON``."""
    out: dict[str, Any] = {}
    if config is not None:
        cfg = load_config(config, overrides)
        if train_deployment and not cfg.orchestration.train_deployment:
            orchestration = cfg.orchestration.model_copy(update={"train_deployment": train_deployment})
            cfg = cfg.model_copy(update={"orchestration": orchestration})
        if train_deployment and cfg.sweep is not None and not cfg.sweep.trial_deployment:  # trials on the gpu pool
            cfg = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"trial_deployment": SWEEP_TRIAL})})
        out["config"] = cfg.model_dump(mode="json")
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigurationError("expected KEY=VALUE", subject=f"--param {item}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # a bare string, e.g. --param input_dir=/data/in
    return out


def _describe(client: Any, run: Any) -> str:
    state = run.state
    text = f"{run.name:<24} pool {run.work_pool_name or '-':<4} {state.name if state else '?'}"
    message = (state.message or "").strip() if state else ""
    return f"{text}: {message[:300]}" if message and state and state.type.value != "COMPLETED" else text


def _children(client: Any, flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
    )


def trigger(deployment: str, parameters: dict[str, Any], wait_minutes: float, echo: Any = print) -> str:
    """Create a run of ``deployment`` (short or ``flow/deployment`` name); with ``wait_minutes``
    > 0 wait for it (bounded), printing state changes, then each run's pool and final state.
    Returns the final (or last seen) state type."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = api_url()
    check_server(url)
    name = DEPLOYMENTS.get(deployment, deployment)
    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        try:
            dep = client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise ConfigurationError("no such deployment", subject=name, hint="run `make deploy` first") from None
        try:
            run = client.create_flow_run_from_deployment(dep.id, parameters=parameters)
        except PrefectHTTPStatusError as exc:  # enforce_parameter_schema: 409 with the reason
            raise PermanentError(
                f"the server refused the parameters: {exc.response.text[:500]}", subject=name
            ) from None
        base = url.removesuffix("/api")
        echo(f"flow run '{run.name}' of {name} created: {base}/runs/flow-run/{run.id}")
        if wait_minutes <= 0:
            return run.state.type.value if run.state else "SCHEDULED"
        deadline = time.monotonic() + wait_minutes * 60
        seen: dict[str, str] = {}
        while True:
            run = client.read_flow_run(run.id)
            for r in [run, *_children(client, run.id)]:
                state = r.state.name if r.state else "?"
                if seen.get(r.name) != state:
                    seen[r.name] = state
                    echo(f"  {r.name:<24} pool {r.work_pool_name or '-':<4} {state}")
            if run.state is not None and run.state.type.value in FINAL:
                break
            if time.monotonic() > deadline:
                echo(
                    f"still {run.state.name if run.state else '?'} after {wait_minutes:g} min; it goes on on the server"
                )
                return run.state.type.value if run.state else "UNKNOWN"
            time.sleep(2)
        echo("final states:")
        for r in [run, *_children(client, run.id)]:
            echo(f"  {_describe(client, r)}")
            if tasks := _task_states(client, r.id):
                echo(f"    tasks: {tasks}")
        return run.state.type.value


def _task_states(client: Any, flow_run_id: Any) -> str:
    """``download Completed, curate Cached, ...`` in start order (run_deployment's link task left out)."""
    from prefect.client.schemas.filters import FlowRunFilter
    from prefect.client.schemas.sorting import TaskRunSort

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id]}), sort=TaskRunSort.EXPECTED_START_TIME_ASC
    )
    return ", ".join(
        f"{t.name.rsplit('-', 1)[0]} {t.state.name if t.state else '?'}"
        for t in runs
        if ".run_deployment." not in t.task_key  # the link to a child run, listed as a run itself
    )
