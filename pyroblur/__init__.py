"""PyroBlur: train and run a face + license-plate detector that anonymizes images and video.

The library package holds plain functions and typed models; it never imports Prefect.
Prefect tasks (``tasks/``) and flows (``flows/``) wrap it.
"""

__version__ = "0.1.0"

#: Fixed class ids used in every export, every model and every report.
CLASSES: tuple[str, ...] = ("face", "license_plate")
FACE, LICENSE_PLATE = 0, 1
