"""The second line of the dead-worker protection: a loop beside every worker that sets Crashed
the runs whose heartbeats stopped, reading the server's records instead of waiting for an event.

The ``pyroblur-crash-silent-runs`` automation (deployments/setup.py) reacts to events: when the
one event that would fire it, or its action, is lost (on a busy SQLite server an event can be
dead-lettered after "database is locked"), that run keeps its Running state and its pool slot
for ever. This loop does not depend on any single event: every :data:`EVERY` seconds it lists
the project's runs (tag ``pyroblur``) that are Running or Cancelling, looks for a heartbeat of
each in the server's event history within the automation's silence, and sets Crashed (forced)
those with none, the same action the automation takes. A lost request is simply made again at
the next pass. So a run whose heartbeats stop is Crashed within the silence plus one pass
(150 + 30 s by default), whichever of the two gets there first.

It reads the silence from the automation itself (``make deploy SILENCE=...``), and does nothing
while that automation does not exist (``make deploy`` not run yet). The workers' entrypoint
(docker/worker-entrypoint.sh) starts it next to each worker; several sweepers are harmless (a
run already final is left alone).

Run: ``python deployments/sweeper.py [--once]`` against ``PREFECT_API_URL``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from setup import AUTOMATION  # noqa: E402 - the automation's name, one place

log = logging.getLogger("pyroblur.sweeper")

#: Seconds between two passes (the workers' heartbeat interval).
EVERY = 30.0
TAG = "pyroblur"


def silence_of(client: Any) -> float | None:
    """The automation's silence in seconds (its trigger's ``within``), None without one."""
    for automation in client.read_automations_by_name(AUTOMATION):
        within = getattr(automation.trigger, "within", None)
        if within:
            return within.total_seconds()
    return None


def _beat_since(client: Any, flow_run_id: Any, since: datetime) -> bool:
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    page = client.read_events(
        EventFilter(
            occurred=EventOccurredFilter(since=since),
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        ),
        limit=1,
    )
    return bool(page.events)


def silent_runs(client: Any, silence: float, now: datetime | None = None) -> list[Any]:
    """The project's Running/Cancelling runs with no heartbeat (and no state change) for
    ``silence`` seconds."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterTags,
    )

    now = now or datetime.now(UTC)
    since = now - timedelta(seconds=silence)
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type={"any_": ["RUNNING", "CANCELLING"]}),
            tags=FlowRunFilterTags(all_=[TAG]),
            # runs a worker started (a subflow runs inside its parent's process: the parent's
            # heartbeats and this check cover that process)
            deployment_id=FlowRunFilterDeploymentId(is_null_=False),
        )
    )
    silent = []
    for run in runs:
        changed = run.state.timestamp if run.state is not None else None
        if changed is not None and changed > since:
            continue  # just started (or cancelling): its first heartbeats may not be due yet
        if not _beat_since(client, run.id, since):
            silent.append(run)
    return silent


def sweep(client: Any) -> list[str]:
    """One pass: set Crashed every silent run; returns their names."""
    from prefect.states import Crashed

    silence = silence_of(client)
    if silence is None:
        return []
    crashed = []
    for run in silent_runs(client, silence):
        message = f"no heartbeat for {silence:g} s: its worker died or lost the API (found by the sweeper)"
        client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        log.warning("flow run %s (%s): %s; set Crashed", run.name, run.id, message)
        crashed.append(run.name)
    return crashed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=EVERY, help="seconds between two passes")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sweeper %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from prefect.client.orchestration import get_client

    while True:
        try:
            with get_client(sync_client=True) as client:
                sweep(client)
        except Exception as exc:  # noqa: BLE001 - a server restart or a busy database: try again next pass
            log.info("pass skipped: %s", exc)
        if args.once:
            return 0
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
