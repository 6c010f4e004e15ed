"""What ``make deploy`` does after ``prefect deploy --all``: fit the deployments to this host.

1. The ``pyroblur-crash-silent-runs`` automation: a flow run whose heartbeats
   (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, 30 s on our workers) stop for ``--silence`` seconds
   without a final state (a worker or its host died) is set to Crashed. That frees its work
   pool's slot and ends the parent's wait for the GPU stage with a named error.
2. ``retrain-weekly``: its parameters come from ``--retrain-config`` (default the real config,
   training sent to the gpu pool) and its schedule starts active or paused (``--retrain-schedule
   auto|active|paused``; ``auto`` is active only when this host can run that config: a CUDA GPU
   when it trains on one, the internet when a source downloads).
3. Strict parameters: ``prefect deploy`` builds each deployment's parameter schema from the flow's
   signature, which lets unknown top-level parameters through (``{"config": ..., "foo": 1}``
   was accepted, then the run crashed on the worker). The schema gets ``additionalProperties:
   false`` at its top level, so the server refuses such a run (409) before it is scheduled.
4. Prints what was deployed: pools, schedules, and whether each is active.

Run: ``python deployments/setup.py [--retrain-config configs/demo.yaml] [--retrain-schedule paused]``
against ``PREFECT_API_URL`` (and ``PREFECT_API_AUTH_STRING`` when the server has one).
"""

from __future__ import annotations

import argparse
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AUTOMATION = "pyroblur-crash-silent-runs"
RETRAIN = "retrain_weekly/retrain-weekly"
GPU_STAGE = "train_stage/train-stage"
OFFLINE_KINDS = {"synthetic", "local"}
PROBE = ("huggingface.co", 443)


def silent_run_automation(silence_s: float) -> Any:
    """The automation: after a heartbeat, expect another heartbeat (or a final state) within
    ``silence_s`` seconds, for each flow run separately; otherwise set that run Crashed."""
    from prefect.automations import AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    final = ("Completed", "Failed", "Cancelled", "Crashed")
    return AutomationCore(
        name=AUTOMATION,
        description=(
            "PyroBlur (make deploy): a flow run that stopped sending heartbeats without reaching a "
            "final state lost its worker; mark it Crashed so its pool slot is freed, its parent stops "
            "waiting and Retry can resume it. See docs/operations.md."
        ),
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            # only runs of our deployments (all tagged pyroblur): other flows on a shared server
            # may heartbeat less often (Prefect's default is every 180 s)
            match_related=ResourceSpecification(
                {"prefect.resource.role": "tag", "prefect.resource.id": "prefect.tag.pyroblur"}
            ),
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in final)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silence_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {silence_s:g} s: its worker died or lost the API",
                force=True,
            )
        ],
    )


def ensure_automation(client: Any, silence_s: float) -> str:
    """Create the automation, replacing an older one of the same name (idempotent)."""
    for old in client.read_automations_by_name(AUTOMATION):
        client.delete_automation(old.id)
    return str(client.create_automation(silent_run_automation(silence_s)))


def host_can_run(config: Any) -> tuple[bool, str]:
    """Whether this host can run ``config`` on schedule, and why (for the ``auto`` choice)."""
    device = config.train.device.strip().lower()
    if device not in ("cpu", "mps"):
        try:
            import torch

            gpu = torch.cuda.is_available()
        except Exception:  # noqa: BLE001 - no usable torch is no GPU
            gpu = False
        if not gpu:
            return False, f"no CUDA GPU on this host for train.device={config.train.device!r}"
    online = [s.name for s in config.sources if s.kind not in OFFLINE_KINDS]
    if online:
        try:
            socket.create_connection(PROBE, timeout=3).close()
        except OSError:
            return False, f"no internet ({PROBE[0]} unreachable) for sources {', '.join(online)}"
    return True, "this host has what the config needs"


def retrain_parameters(config_path: Path, train_deployment: str | None) -> tuple[dict[str, Any], Any]:
    """``retrain-weekly``'s ``config`` parameter from a config file, training sent to the gpu
    pool unless the file says otherwise."""
    from pyroblur.config import load_config

    cfg = load_config(config_path)
    if train_deployment and not cfg.orchestration.train_deployment:
        cfg = cfg.model_copy(
            update={"orchestration": cfg.orchestration.model_copy(update={"train_deployment": train_deployment})}
        )
    return {"config": cfg.model_dump(mode="json")}, cfg


def configure_retrain(client: Any, config_path: Path, schedule: str, train_deployment: str | None) -> str:
    """Set retrain-weekly's parameters and its schedules' active flag; return a summary line."""
    from prefect.client.schemas.actions import DeploymentUpdate

    params, cfg = retrain_parameters(config_path, train_deployment)
    dep = client.read_deployment_by_name(RETRAIN)
    client.update_deployment(dep.id, DeploymentUpdate(parameters=params))
    if schedule == "auto":
        active, why = host_can_run(cfg)
    else:
        active, why = schedule == "active", f"RETRAIN_SCHEDULE={schedule}"
    for sched in dep.schedules:
        client.update_deployment_schedule(dep.id, sched.id, active=active)
    if not active:  # runs the scheduler already created would still start
        from prefect.client.schemas.filters import DeploymentFilter, FlowRunFilter, FlowRunFilterState

        scheduled = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id={"any_": [dep.id]}),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type={"any_": ["SCHEDULED"]})),
        )
        for run in scheduled:
            if run.auto_scheduled:
                client.delete_flow_run(run.id)
    where = f"training on {cfg.orchestration.train_deployment or 'the cpu pool'}"
    turn = "make deploy RETRAIN_SCHEDULE=paused" if active else "make deploy RETRAIN_SCHEDULE=active"
    return (
        f"retrain-weekly: config {config_path} ({cfg.name}, {where}); schedule "
        f"{'ACTIVE' if active else 'PAUSED'}: {why} (change: {turn})"
    )


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with unknown top-level parameters refused (nested models already forbid them)."""
    return {**schema, "additionalProperties": False}


def strict_parameters(client: Any) -> list[str]:
    """Make every deployment of this project (tagged ``pyroblur``) refuse unknown top-level
    parameters; returns their names."""
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    names = []
    deployments = client.read_deployments(
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=["pyroblur"]))
    )
    for dep in deployments:
        schema = dep.parameter_openapi_schema
        if not schema or schema.get("additionalProperties") is False:
            continue
        client.update_deployment(dep.id, DeploymentUpdate(parameter_openapi_schema=strict_schema(schema)))
        names.append(dep.name)
    return names


def summary(client: Any) -> list[str]:
    """One line per deployment: pool and schedules."""
    from prefect.client.schemas.filters import DeploymentFilter

    lines = []
    for dep in sorted(client.read_deployments(deployment_filter=DeploymentFilter()), key=lambda d: d.name):
        flow = client.read_flow(dep.flow_id)
        scheds = ", ".join(
            f"{getattr(s.schedule, 'cron', None) or s.schedule} {'active' if s.active else 'paused'}"
            for s in dep.schedules
        )
        lines.append(f"  {flow.name + '/' + dep.name:<34} pool {dep.work_pool_name:<4} {scheds or 'on demand'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retrain-config", type=Path, default=ROOT / "configs" / "pyroblur.yaml")
    parser.add_argument("--retrain-schedule", choices=["auto", "active", "paused"], default="auto")
    parser.add_argument(
        "--train-deployment",
        default=GPU_STAGE,
        help="GPU stage deployment for retrain-weekly ('' trains inside its cpu-pool run)",
    )
    parser.add_argument(
        "--silence",
        type=float,
        default=150.0,
        help="seconds without a heartbeat after which a flow run is set Crashed (>= 3 heartbeats)",
    )
    args = parser.parse_args(argv)
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print("PREFECT_API_URL is not set (make deploy sets it; or export it)", file=sys.stderr)
        return 2
    with get_client(sync_client=True) as client:
        ensure_automation(client, args.silence)
        print(f"automation {AUTOMATION}: flow runs silent for {args.silence:g} s are set Crashed")
        print(configure_retrain(client, args.retrain_config, args.retrain_schedule, args.train_deployment or None))
        strict = strict_parameters(client)
        print(f"unknown top-level parameters refused (409) by: {', '.join(strict) or 'all already'}")
        print(f"deployments on {PREFECT_API_URL.value()}:")
        print("\n".join(summary(client)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
