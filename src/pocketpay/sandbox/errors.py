"""Stripe-shaped errors: ``{"error": {"type", "code", "message", "param", ...}}``.

Raised by the sandbox's operations and rendered once by the app. The HTTP status follows
Stripe's mapping, which the official SDK turns back into its exception classes (400/404
``InvalidRequestError``, 401 ``AuthenticationError``, 402 ``CardError``, 5xx ``APIError``).
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

DOCS = "https://stripe.com/docs/error-codes"


class StripeError(Exception):
    """One API error; ``extra`` carries fields such as ``decline_code`` or ``payment_intent``."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
            err["doc_url"] = f"{DOCS}/{self.code.replace('_', '-')}"
        if self.param:
            err["param"] = self.param
        err.update(self.extra)
        return {"error": err}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = None, status: int = 400
) -> StripeError:
    return StripeError(status, "invalid_request_error", message, code=code, param=param)


def resource_missing(kind: str, ident: str, *, param: str = "id", status: int = 404) -> StripeError:
    return invalid_request(
        f"No such {kind}: '{ident}'", param=param, code="resource_missing", status=status
    )


def unrecognized_url(method: str, path: str, status: int = 404) -> StripeError:
    return invalid_request(
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or "
        "we can help at https://support.stripe.com/.",
        status=status,
    )


def unexpected_state(message: str) -> StripeError:
    return invalid_request(message, code="payment_intent_unexpected_state")


def authentication(message: str) -> StripeError:
    return StripeError(401, "invalid_request_error", message)


def api_error(message: str, status: int = 500) -> StripeError:
    return StripeError(status, "api_error", message)


def idempotency_mismatch(key: str) -> StripeError:
    return StripeError(
        400,
        "idempotency_error",
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
    )
