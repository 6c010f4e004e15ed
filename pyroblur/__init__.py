"""PyroBlur: train and run a face + license-plate detector that anonymizes images and video.

The library package holds plain functions and typed models; it never imports Prefect.
Prefect tasks (``tasks/``) and flows (``flows/``) wrap it.
"""

__version__ = "0.1.0"

# Before anything imports ultralytics (it reads these once): no run-time pip installs, no online
# checks, in every entry point (CLI, Prefect workers, notebooks). See pyroblur.core.runtime.
from pyroblur.core.runtime import configure_ultralytics as _configure_ultralytics  # noqa: E402

_configure_ultralytics()

#: Fixed class ids used in every export, every model and every report.
CLASSES: tuple[str, ...] = ("face", "license_plate")
FACE, LICENSE_PLATE = 0, 1
