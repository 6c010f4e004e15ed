"""Failure notification hook for flows (scheduled runs fail while nobody watches).

``on_failure=[notify_failure]`` logs one error line in the run's own log and, when a webhook
URL is configured, POSTs a small JSON notice to it (Slack/Teams/Mattermost incoming webhooks
and most alerting tools accept a JSON body with a ``text`` field). The URL comes from
``PYROBLUR_WEBHOOK_URL`` or, failing that, the run's ``config.orchestration.webhook_url``
parameter. A hook never raises: a broken webhook must not hide the run's own failure.
"""

from __future__ import annotations

import os
from typing import Any

import requests
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging.loggers import flow_run_logger

WEBHOOK_ENV = "PYROBLUR_WEBHOOK_URL"
TIMEOUT_S = 10.0


def webhook_url(parameters: dict[str, Any] | None) -> str | None:
    """The webhook to notify: the env var, else ``config.orchestration.webhook_url``."""
    if url := os.environ.get(WEBHOOK_ENV, "").strip():
        return url
    config = (parameters or {}).get("config")
    if isinstance(config, dict):
        orchestration = config.get("orchestration") or {}
        return orchestration.get("webhook_url") or None
    orchestration = getattr(config, "orchestration", None)
    return getattr(orchestration, "webhook_url", None)


def failure_payload(flow_name: str, flow_run: FlowRun, state: State) -> dict[str, Any]:
    """The JSON body POSTed on failure."""
    from prefect.utilities.urls import url_for

    try:
        link = url_for(flow_run)
    except Exception:  # noqa: BLE001 - a link is a nicety
        link = None
    message = (state.message or "").strip()
    text = f"PyroBlur: flow run '{flow_run.name}' of '{flow_name}' ended {state.name}"
    return {
        "text": f"{text}: {message}" if message else text,
        "event": "pyroblur.flow_run.failed",
        "flow": flow_name,
        "flow_run": flow_run.name,
        "flow_run_id": str(flow_run.id),
        "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
        "scheduled": bool(flow_run.auto_scheduled),
        "state": state.name,
        "message": message,
        "url": link,
    }


def notify_failure(flow: Any, flow_run: FlowRun, state: State) -> None:
    """Prefect ``on_failure`` / ``on_crashed`` hook: log, then POST to the webhook if any."""
    logger = flow_run_logger(flow_run, flow)
    payload = failure_payload(getattr(flow, "name", "?"), flow_run, state)
    logger.error("%s", payload["text"])
    url = webhook_url(flow_run.parameters)
    if not url:
        return
    try:
        response = requests.post(url, json=payload, timeout=TIMEOUT_S)
        response.raise_for_status()
        logger.info("failure notice sent to the webhook (HTTP %s)", response.status_code)
    except requests.RequestException as exc:
        # The exception text holds the URL, and webhook URLs carry their token: keep it out of logs.
        status = getattr(exc.response, "status_code", None)
        logger.warning("could not send the failure notice to the webhook: %s (HTTP %s)", type(exc).__name__, status)
