"""Number parsing shared by the format parsers."""

from __future__ import annotations

import math


def finite(value: object, where: str, what: str = "value") -> float:
    """``float(value)``, raising ``ValueError`` naming ``where`` if not a finite number."""
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(out):
        raise ValueError(f"{where}: {what} is {value!r}; NaN and infinity are not valid coordinates")
    return out
