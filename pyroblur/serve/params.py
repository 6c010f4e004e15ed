"""Request options, generated from :class:`~pyroblur.anonymize.options.AnonymizeOptions`.

Every field of the model is a query parameter with its own type, default and description
(a field added to the model appears in the API and its OpenAPI document without an edit
here), except :data:`SERVER_ONLY`: settings that name server files or hardware. Values are
validated by the model itself, so the API refuses exactly what the CLI refuses.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from fastapi import Query, Request
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from pyroblur.anonymize.options import AnonymizeOptions

__all__ = ["DETECTION_ONLY_AFTER", "SERVER_ONLY", "detector_key", "options_dependency", "parse_options"]

#: Fields a client may not set: a server path (weights), the hardware and the console.
SERVER_ONLY = frozenset({"weights", "device", "half", "progress"})

#: Fields that act after detection (masks, encoding, records): requests that differ only in
#: these share a detector and a batch. A field not listed here (a new one too) separates
#: detectors: fail safe, never a detector built with someone else's settings.
DETECTION_ONLY_AFTER = frozenset(
    {
        "mode",
        "ellipse",
        "enlarge",
        "feather",
        "blur_strength",
        "mosaic_cells",
        "color",
        "memory_frames",
        "fill_scale",
        "batch_size",
        "sidecar",
        "audit",
        "verify",
        "strict",
        "jpeg_quality",
        "crf",
        "progress",
    }
)


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(_is_sequence(a) for a in typing.get_args(annotation) if a is not type(None))


def client_fields() -> dict[str, FieldInfo]:
    """The model's fields a request may set, in declaration order."""
    return {k: v for k, v in AnonymizeOptions.model_fields.items() if k not in SERVER_ONLY}


def _query_parameter(name: str, info: FieldInfo) -> inspect.Parameter:
    if _is_sequence(info.annotation):
        # repeated (?classes=face&classes=license_plate) or comma-separated (?color=0,0,255)
        annotation: Any = list[str] | None
    else:
        annotation = info.annotation | None  # type: ignore[operator]
    default = info.get_default(call_default_factory=True)
    description = (info.description or name.replace("_", " ")) + f" (default: {default!r})"
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=Query(None, description=description),
        annotation=annotation,
    )


def parse_options(values: dict[str, Any], base: AnonymizeOptions | None = None) -> AnonymizeOptions:
    """``AnonymizeOptions`` from request values (``None`` = the default); list values may be
    repeated or comma-separated. Raises :class:`pydantic.ValidationError`."""
    fields = client_fields()
    given: dict[str, Any] = {}
    for name, value in values.items():
        if value is None or name not in fields:
            continue
        if _is_sequence(fields[name].annotation):
            items = value if isinstance(value, list) else [value]
            value = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
        given[name] = value
    base = base or AnonymizeOptions()
    return AnonymizeOptions.model_validate({**base.model_dump(exclude_unset=True), **given})


def options_dependency(base: Callable[[], AnonymizeOptions]) -> Callable[..., AnonymizeOptions]:
    """A FastAPI dependency whose signature is one query parameter per client field; it
    returns the validated options (``base()`` supplies the server-side fields)."""

    def dependency(request: Request, **values: Any) -> AnonymizeOptions:
        try:
            return parse_options(values, base())
        except ValidationError as exc:
            from pyroblur.serve.errors import ApiError

            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ApiError(422, "invalid_option", f"option {field!r}: {first['msg']}", field=field) from None

    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    params += [_query_parameter(name, info) for name, info in client_fields().items()]
    dependency.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return dependency


def detector_key(options: AnonymizeOptions) -> str:
    """Requests with the same key can share a detector and a batch."""
    import json

    # weights: the model holder keeps one detector cache per served model (swapped on promotion)
    return json.dumps(options.model_dump(mode="json", exclude={*DETECTION_ONLY_AFTER, "weights"}), sort_keys=True)
