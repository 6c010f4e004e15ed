"""Preflight: what a run needs, checked before any expensive stage, so a bad precondition
fails in seconds, named, instead of after training.

Its own module (not part of :mod:`pyroblur.config`, which every stage imports): it plans the
sources' downloads, and a stage's cache key must not depend on every source's code.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyroblur.config import ConfigError, PipelineConfig

log = logging.getLogger(__name__)


#: Python packages that a source kind needs beyond the core dependencies.
_SOURCE_PACKAGES = {"roboflow": "roboflow"}


def preflight(cfg: PipelineConfig, *, until: str = "promote", check_network: bool = True) -> None:
    """Check what a run needs before any expensive stage, so a bad precondition fails in
    seconds, named, instead of after training.

    Checks: the data root is writable; the model registry (if any) is a valid registry; every
    source's optional package is installed; the training weights exist or may be downloaded;
    the training and benchmark devices exist on this machine (unless the GPU stage runs as its
    own deployment, or ``until`` stops before training); every host a source still has to download
    from answers (``check_network``: files already in place need no network). All problems are
    collected into one :class:`ConfigError` (exit 2).
    """
    import importlib.util
    import os

    from pyroblur.core.settings import get_paths

    paths = get_paths()
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"data root {paths.root} cannot be created: {exc.strerror or exc} (set PYROBLUR_DATA_DIR)"
        ) from None
    if not os.access(paths.root, os.W_OK | os.X_OK):
        raise ConfigError(f"data root {paths.root} is not writable (set PYROBLUR_DATA_DIR)")

    if until in ("train", "promote"):
        # The MLflow store is the record of runs and models: down means fail now, named, not
        # after hours of training (tracking.TrackingStoreError names the URI and what to do).
        from pyroblur.registry.store import RegistryError, load_registry
        from pyroblur.registry.tracking import check_store

        check_store(paths.root)
        try:
            load_registry(paths.registry)
        except (RegistryError, OSError, ValueError) as exc:
            raise ConfigError(str(exc).splitlines()[0]) from None

    def installed(package: str) -> bool:
        try:
            return importlib.util.find_spec(package) is not None
        except (ImportError, ValueError):  # ValueError: blocked in sys.modules (None)
            return False

    # Everything below is collected, not raised one by one: a user fixes all of it in one go.
    problems: list[str] = []
    for src in cfg.sources:
        package = _SOURCE_PACKAGES.get(src.kind)
        if package and not installed(package):
            problems.append(
                f"source '{src.name}' (kind {src.kind}) needs the Python package '{package}', which is not "
                f"installed (pip install {package}, or remove the source)"
            )
    if check_network:
        problems += _unreachable_sources(cfg, paths.raw)

    stages = ("download", "curate", "balance_split", "export", "train", "promote")
    if not (until in stages and stages.index(until) < stages.index("train")):
        model = cfg.train.model
        if not model.endswith((".yaml", ".yml")) and not Path(model).exists() and not cfg.train.allow_download:
            problems.append(
                f"train.model: weights file '{model}' not found and train.allow_download is false "
                "(give the file's full path, or a .yaml such as yolo11n.yaml to train from scratch)"
            )
        from pyroblur.core.devices import cpu_training_threads

        try:
            cpu_training_threads()
        except ValueError as exc:
            problems.append(str(exc))
        if not cfg.orchestration.train_deployment:  # else the GPU stage's devices are checked there
            from pyroblur.core.devices import device_problem

            for key, device in (("train.device", cfg.train.device), ("benchmark.device", cfg.benchmark.device)):
                problem = device_problem(device)
                if problem:
                    problems.append(f"{key}: {problem}")
    if problems:
        raise ConfigError(
            "; ".join(problems)
            if len(problems) == 1
            else f"{len(problems)} problems: " + "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        )


_PROBED_KINDS = frozenset({"wider_face", "hf_coco"})


def _unreachable_sources(cfg: PipelineConfig, raw: Path) -> list[str]:
    """One line per source whose download host cannot be reached while its files are missing.

    Skipped with ``PYROBLUR_PREFLIGHT_NETWORK=0`` (e.g. where downloads go through a proxy the
    direct probe cannot see); hosts behind a configured HTTP(S) proxy are not probed either.
    """
    import os

    from pyroblur.data.download import check_reachable
    from pyroblur.data.sources import plan_source

    if os.environ.get("PYROBLUR_PREFLIGHT_NETWORK", "1").strip().lower() in ("0", "false", "no"):
        return []
    out = []
    for src in cfg.sources:
        # Only sources whose files come through our own downloader: Roboflow's and the FiftyOne
        # zoo's packages talk to their own API hosts (and the planned URL is informational).
        if src.kind not in _PROBED_KINDS:
            continue
        try:
            planned = plan_source(src, raw / src.name)
        except Exception as exc:  # noqa: BLE001 - planning problems surface in the download stage
            log.debug("cannot plan source %s: %s", src.name, exc)
            continue
        err = check_reachable(planned)
        if err is not None:
            out.append(f"source '{src.name}': {err}")
    return out
