"""The one error shape of the API: ``{"error": {"code", "message", "field"?}}``."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["ApiError", "ErrorBody", "ErrorResponse"]


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    """What every 4xx/5xx answer carries."""

    error: ErrorBody


class ApiError(Exception):
    """An HTTP error with a machine-readable ``code`` and a message that names the problem."""

    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    def body(self) -> dict:
        return ErrorResponse(error=ErrorBody(code=self.code, message=self.message, field=self.field)).model_dump(
            exclude_none=True
        )
