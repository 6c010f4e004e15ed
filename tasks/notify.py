"""What a person watching runs gets: the library's log lines in each run's logs, and a failure
notice (scheduled runs fail while nobody watches).

:func:`route_library_logs` sends the ``pyroblur`` loggers' records to the Prefect API, so they
appear among the run's logs in the UI.

``on_failure=[notify_failure]`` logs one error line in the run's own log and, when a webhook
URL is configured, POSTs a small JSON notice to it (Slack/Teams/Mattermost incoming webhooks
and most alerting tools accept a JSON body with a ``text`` field). The URL comes from
``PYROBLUR_WEBHOOK_URL`` or, failing that, the run's ``config.orchestration.webhook_url``
parameter. A hook never raises: a broken webhook must not hide the run's own failure.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import requests
from prefect.client.schemas.objects import FlowRun, State
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler
from prefect.logging.loggers import flow_run_logger

WEBHOOK_ENV = "PYROBLUR_WEBHOOK_URL"
TIMEOUT_S = 10.0
LIBRARY_LOGGER = "pyroblur"


class _RunLogHandler(APILogHandler):
    """Prefect's API log handler for records emitted inside a flow or task run only (outside a
    run, e.g. a library call from the CLI or a test, there is no run to attach them to)."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "flow_run_id", None) or FlowRunContext.get() or TaskRunContext.get():
            super().emit(record)


def route_library_logs() -> None:
    """Send the library's log records to the run's logs in the UI, once per process.

    Prefect does this for loggers named in ``PREFECT_LOGGING_EXTRA_LOGGERS`` only when that is
    set before Prefect configures logging (the workers' environment sets it); a flow-run process
    started without it gets the handler here. INFO is kept (the root logger's WARNING level
    would drop "resuming training from ...").
    """
    library = logging.getLogger(LIBRARY_LOGGER)
    if not any(isinstance(h, APILogHandler) for h in library.handlers):
        library.addHandler(_RunLogHandler())
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO)


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
