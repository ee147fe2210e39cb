"""The public API's errors in its OpenAPI document: every code a route can answer, grouped by
status, each status documented as ``application/problem+json`` with the ``ProblemDetail``
schema and the list of its codes. Routes declare theirs with ``responses=problems(...)``,
using the shared groups (``AUTH``, ``BODY``, ``IDEMPOTENT``, ``LIST``); every route can answer
``request.unknown_parameter``.

``install`` finishes the document once, when it is first asked for: the ``ProblemDetail``
schema, FastAPI's default 422 replaced by the problem it really is, and ``Idempotency-Key``
marked required where a route declares it (the route itself answers its absence with
``idempotency.key_missing`` rather than a generic validation error, so it is optional for
FastAPI).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from pocketpay.gateway.schemas import ProblemDetail

# code -> (status, when). Kept in one place so the document and the tests agree.
CODES: dict[str, tuple[int, str]] = {
    "request.unknown_parameter": (400, "a query parameter the route does not define"),
    "request.invalid_cursor": (400, "starting_after/ending_before names no object of yours"),
    "request.malformed_json": (400, "the body is not valid JSON"),
    "idempotency.key_missing": (400, "no Idempotency-Key header"),
    "idempotency.key_invalid": (400, "the Idempotency-Key is not 1-255 printable characters"),
    "webhooks.invalid_signature": (400, "missing or wrong Stripe-Signature"),
    "webhooks.malformed": (400, "the signed body is not an event"),
    "auth.unauthorized": (401, "no Authorization: Bearer header"),
    "auth.invalid_token": (401, "the token or API key is not valid"),
    "auth.token_expired": (401, "the access token expired: refresh it"),
    "auth.invalid_credentials": (401, "wrong email or password"),
    "auth.invalid_refresh_token": (401, "unknown, expired or already used refresh token"),
    "auth.invalid_api_key": (401, "no such API key"),
    "auth.api_key_revoked": (401, "the API key was revoked"),
    "auth.api_key_expired": (401, "the API key expired (rolled)"),
    "auth.forbidden": (403, "the caller's role does not allow this"),
    "auth.insufficient_scope": (403, "the API key's scopes do not allow this"),
    "auth.session_required": (403, "API keys cannot manage API keys: use an access token"),
    # The web app's pages (HTML, not in the API document): a form refused, no session.
    "web.csrf_failed": (403, "a web form without its CSRF token, or from another site"),
    "web.login_required": (401, "a web page without a session: redirected to log in"),
    "not_found": (404, "no such object among yours"),
    "transfers.recipient_not_found": (404, "no PocketPay user has the recipient's email"),
    "payments.attempt_not_stuck": (404, "no stuck attempt of that operation"),
    "billing.payment_method_required": (422, "a card subscription needs a saved payment_method"),
    "billing.currency_mismatch": (422, "the new plan's currency is not the subscription's"),
    "billing.test_clock_backwards": (422, "the test clock only moves forward"),
    "billing.plan_archived": (409, "the plan takes no new subscriptions"),
    "billing.invalid_transition": (
        409,
        "the subscription's or invoice's status does not allow this",
    ),
    "payments.not_refundable": (409, "the payment paid an invoice: refund the invoice"),
    "billing.unavailable": (503, "this deployment runs no billing component"),
    "notifications.unavailable": (503, "this deployment runs no notifications component"),
    "notifications.unknown_event_type": (422, "events names an event type that does not exist"),
    "notifications.endpoint_limit": (409, "too many webhook endpoints: delete one first"),
    "notifications.endpoint_disabled": (409, "the webhook endpoint is disabled: enable it first"),
    "payments.card_declined": (402, "the PSP refused to keep the card (see decline code)"),
    "auth.email_taken": (409, "an account with this email exists: log in"),
    "idempotency.in_progress": (409, "a request with this key is still running: retry"),
    "payments.invalid_transition": (409, "the payment's status does not allow this"),
    "api_keys.not_active": (409, "the API key is revoked or expired: create a new one"),
    "api_keys.limit_reached": (409, "100 active API keys: revoke one first"),
    "request.too_large": (413, "the body is larger than the configured limit"),
    "request.unsupported_media_type": (415, "the body is not application/json"),
    "validation.failed": (422, "a field is missing or invalid (see errors)"),
    "validation.unknown_currency": (422, "not an ISO 4217 currency we support"),
    "idempotency.key_reused": (422, "this key was used with a different request"),
    "payments.invalid_payment_method": (422, "the PSP does not know the payment method"),
    "payments.capture_exceeds_authorized": (422, "more than the authorized amount"),
    "payments.refund_exceeds_captured": (422, "more than what is left to refund"),
    "ledger.insufficient_funds": (422, "the wallet's available balance is too low"),
    "fx.unsupported_currency": (422, "no exchange rate for this currency"),
    "fx.same_currency": (422, "sell and buy currencies are the same"),
    "fx.amount_too_small": (422, "the amount buys less than one minor unit"),
    "fx.amount_too_large": (422, "an amount is beyond 10^12 minor units"),
    "fx.quote_expired": (409, "the quote expired: create a new one"),
    "payouts.invalid_destination": (422, "the bank account's country, routing or account number"),
    "payouts.not_cancelable": (409, "the payout is no longer pending"),
    "disputes.not_open": (409, "the dispute no longer takes evidence (submitted or closed)"),
    "fx.quote_already_converted": (409, "the quote was converted already: create a new one"),
    "fx.rates_unavailable": (503, "the rates file cannot be read"),
    "ledger.self_transfer": (422, "sender and recipient are the same user"),
    "notifications.target_refused": (
        422,
        "the URL is not http(s) or its host resolves to a loopback, private, link-local, "
        "metadata or other non-public address",
    ),
    "notifications.target_unresolved": (422, "the URL's host has no address in DNS"),
    "rate_limited": (429, "too many requests: wait Retry-After seconds"),
    "stream.too_many_connections": (429, "too many open streams of this user: close one"),
    "stream.invalid_cursor": (400, "Last-Event-ID / resume_from is not a frame's cursor"),
    "payments.provider_unavailable": (503, "the PSP did not answer: retry, same key"),
    "payments.busy": (503, "too many payments waiting for authorization: retry later"),
}

AUTH = (
    "auth.unauthorized",
    "auth.invalid_token",
    "auth.token_expired",
    "auth.invalid_api_key",
    "auth.api_key_revoked",
    "auth.api_key_expired",
    "auth.insufficient_scope",
    "rate_limited",
)
BODY = (
    "request.malformed_json",
    "request.too_large",
    "request.unsupported_media_type",
    "validation.failed",
)
IDEMPOTENT = (
    "idempotency.key_missing",
    "idempotency.key_invalid",
    "idempotency.in_progress",
    "idempotency.key_reused",
)
LIST = ("request.invalid_cursor", "validation.failed")
PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetail"}


def problems(*codes: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer ``codes`` (plus the unknown-parameter
    400 every route can answer)."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in ("request.unknown_parameter", *codes):
        status = CODES[code][0]
        if code not in by_status[status]:
            by_status[status].append(code)
    out: dict[int | str, dict[str, Any]] = {}
    for status, listed in sorted(by_status.items()):
        lines = "\n".join(f"- `{c}`: {CODES[c][1]}" for c in listed)
        out[status] = {
            "description": f"Problem (`code` is one of):\n{lines}",
            "content": {"application/problem+json": {"schema": PROBLEM_REF}},
        }
    return out


BEARER = "bearerAuth"
BEARER_DESCRIPTION = (
    "`Authorization: Bearer <token>`: an access token from `POST /api/v1/auth/login` (valid "
    "15 minutes; renew it with the refresh token), or a secret API key `pp_sk_...`."
)


def _problem_422(operation: dict[str, Any]) -> None:
    """FastAPI documents a 422 ``HTTPValidationError`` (``application/json``) on any route
    with parameters that does not declare its own; ours is a problem."""
    answer = operation.get("responses", {}).get("422")
    if answer and "application/json" in answer.get("content", {}):
        operation["responses"]["422"] = problems("validation.failed")[422]


def install(app: FastAPI) -> None:
    """Serve the finished document at /openapi.json (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            defs = ProblemDetail.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(defs.pop("$defs", {}))
            schemas["ProblemDetail"] = defs
            for item in doc.get("paths", {}).values():
                for operation in item.values():
                    _problem_422(operation)
                    for param in operation.get("parameters", []):
                        if param["in"] == "header" and param["name"] == "Idempotency-Key":
                            param["required"] = True
                            param["schema"] = {"type": "string", "minLength": 1, "maxLength": 255}
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
