"""A Roboflow (Universe) project version, exported with the ``roboflow`` package.

Read as YOLO (``yolov11``, ``yolov8``, ``yolov5pytorch``, ... : data.yaml + ``<split>/images``)
or as COCO (``coco``: ``<split>/_annotations.coco.json`` beside the images). The package's
``Version.download`` rewrites data.yaml of ``yolov5pytorch``/``yolov7pytorch``/``mt-yolov6`` to
absolute paths inside the download folder, so the export is downloaded straight into its final
folder (never renamed afterwards); a stamp written last marks it complete.

The API key comes from the environment variable ``api_key_env``; under Prefect, the download
task first fills it from the Secret block named in ``api_key_secret_block`` when one is set. It is a secret: it is never logged, never written
to records, manifests or the stamp, and is scrubbed from the messages of errors raised
here (and of log records emitted while the ``roboflow`` package runs).

``roboflow`` is an optional dependency, imported only when a download is needed.

Layout under ``dest``::

    export/data.yaml, export/{train,valid,test}/{images,labels}/   (a YOLO export)
    export/{train,valid,test}/_annotations.coco.json + images       (a COCO export)
    export/.pyroblur-roboflow.json                                 (what was exported; written last)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from pyroblur.core.errors import ConfigurationError, PyroblurError
from pyroblur.core.records import SampleRecord
from pyroblur.data.download import PlannedDownload, unreachable_reason
from pyroblur.data.sources._common import coco_files, coco_split_name, load_coco_json, load_yolo_folder
from pyroblur.data.sources.models import RoboflowSource

log = logging.getLogger(__name__)

STAMP_NAME = ".pyroblur-roboflow.json"
_REDACTED = "***"


class RoboflowError(PyroblurError):
    """The Roboflow download failed; the message never contains the API key.

    Transient when the network failed in a way a retry can outlive (timeout, dropped
    connection); permanent otherwise (API refusal, unknown project, unreachable host).
    """


class RoboflowKeyMissingError(RoboflowError, ConfigurationError):
    """No API key is configured."""


def plan(cfg: RoboflowSource, dest: Path) -> list[PlannedDownload]:
    """The project version's Universe page (the API chooses the actual file URLs)."""
    return [
        PlannedDownload(
            url=f"https://universe.roboflow.com/{cfg.workspace}/{cfg.project}/dataset/{cfg.version}",
            dest=Path(dest) / "export",
        )
    ]


def _what(cfg: RoboflowSource) -> dict[str, Any]:
    return {
        "workspace": cfg.workspace,
        "project": cfg.project,
        "version": cfg.version,
        "format": cfg.export_format,
    }


def _api_key(cfg: RoboflowSource) -> str:
    # A Prefect Secret block (api_key_secret_block) is read by the orchestration layer (the
    # download task, tasks/_secrets.py), which puts the key into ``api_key_env`` for this process:
    # the library itself never talks to Prefect.
    value = os.environ.get(cfg.api_key_env, "").strip()
    if not value:
        where = (
            f" (the Prefect Secret block {cfg.api_key_secret_block!r} is read only when the pipeline runs "
            "under Prefect: `pyroblur run`, a deployment)"
            if cfg.api_key_secret_block
            else " (or name a Prefect Secret block in api_key_secret_block)"
        )
        raise RoboflowKeyMissingError(
            f"no Roboflow API key: set the environment variable {cfg.api_key_env}{where}. Get a key at "
            "https://app.roboflow.com/settings/api"
        )
    return value


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, _REDACTED) if secret else text


class _RedactFilter(logging.Filter):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = _redact(message, self.secret), None
        if record.exc_info:
            # A traceback may quote the key (e.g. in a URL): render it now, scrubbed.
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
        if record.exc_text:
            record.exc_text = _redact(record.exc_text, self.secret)
        return True


@contextmanager
def _redacted_logs(secret: str) -> Iterator[None]:
    """Scrub ``secret`` from every log record handled while the block runs."""
    handlers = set(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.update(logger.handlers)
    filt = _RedactFilter(secret)
    for handler in handlers:
        handler.addFilter(filt)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(filt)


def _download(cfg: RoboflowSource, location: Path) -> None:
    try:
        import roboflow
    except ImportError:
        raise RoboflowError(
            "the roboflow package is needed for Roboflow sources",
            subject=cfg.name,
            hint="pip install 'pyroblur[roboflow]' (or pip install roboflow)",
        ) from None
    key = _api_key(cfg)
    failure: str | None = None
    transient = False
    with _redacted_logs(key):
        try:
            rf = roboflow.Roboflow(api_key=key)
            version = rf.workspace(cfg.workspace).project(cfg.project).version(cfg.version)
            version.download(cfg.export_format, location=str(location), overwrite=True)
        except Exception as exc:  # noqa: BLE001 - re-raised below without the key
            failure = _redact(f"{type(exc).__name__}: {exc}", key)
            unreachable = unreachable_reason(exc)
            if unreachable is not None:
                failure = f"{unreachable}: {failure}"
            transient = isinstance(exc, requests.ConnectionError | requests.Timeout) and unreachable is None
    if failure is not None:
        # Raised outside the except block so the original exception (which may quote
        # the key, e.g. in a URL) is not chained to ours.
        raise RoboflowError(
            f"Roboflow download of {cfg.workspace}/{cfg.project} v{cfg.version} ({cfg.export_format}) failed: {failure}",
            subject=cfg.name,
            hint="check the key's access to the project and the workspace/project/version names; "
            "offline, put an export in place with a `local` source instead",
            transient=transient,
        )


def _load(cfg: RoboflowSource, export: Path) -> list[SampleRecord]:
    if cfg.export_format != "coco":
        return load_yolo_folder(export, cfg.class_map, cfg.name)
    records: list[SampleRecord] = []
    for js in coco_files(export):
        records.extend(load_coco_json(js, cfg.class_map, cfg.name, coco_split_name(js, export)))
    return records


def fetch(cfg: RoboflowSource, dest: Path) -> list[SampleRecord]:
    """Export the project version once (skipped when already exported), then read it."""
    dest = Path(dest).resolve()
    export = dest / "export"
    stamp = export / STAMP_NAME
    done = stamp.exists() and json.loads(stamp.read_text(encoding="utf-8")) == _what(cfg)
    if not done:
        # Straight into the final folder: some formats' data.yaml gets absolute paths to it.
        shutil.rmtree(export, ignore_errors=True)
        export.mkdir(parents=True)
        log.info("downloading Roboflow %s/%s v%d (%s)", cfg.workspace, cfg.project, cfg.version, cfg.export_format)
        try:
            _download(cfg, export)
        except BaseException:
            shutil.rmtree(export, ignore_errors=True)
            raise
        (export / STAMP_NAME).write_text(json.dumps(_what(cfg)), encoding="utf-8")
    return _load(cfg, export)
