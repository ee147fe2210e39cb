"""Business errors are values with stable codes; the gateway maps them to HTTP once.

Components raise ``AppError`` subclasses (never HTTP exceptions). The ``status`` is a hint for
the boundary: the HTTP layer turns any AppError into one application/problem+json document.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    code: str = "internal.error"
    status: int = 500
    title: str = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.errors = errors
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://pocketpay.dev/errors/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors:
            body["errors"] = self.errors
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> AppError:
        """Rebuild an error that crossed an internal HTTP hop, keeping its code and status."""
        err = AppError(
            str(body.get("detail", "")),
            code=str(body.get("code", "internal.error")),
            status=int(body.get("status", 500)),
            errors=body.get("errors"),
        )
        err.title = str(body.get("title", "Error"))
        return err


class ValidationFailed(AppError):
    code = "validation.failed"
    status = 422
    title = "Validation failed"


class NotFound(AppError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(AppError):
    code = "conflict"
    status = 409
    title = "Conflict"


class Unauthorized(AppError):
    code = "auth.unauthorized"
    status = 401
    title = "Unauthorized"


class Forbidden(AppError):
    code = "auth.forbidden"
    status = 403
    title = "Forbidden"


class Unavailable(AppError):
    code = "service.unavailable"
    status = 503
    title = "Service unavailable"


class KeyReused(AppError):
    """An idempotency key already names an effect made from a different request."""

    code = "idempotency.key_reused"
    status = 422
    title = "Idempotency key reused with a different request"
