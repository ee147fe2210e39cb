"""API-key authentication as Stripe does it: ``Authorization: Bearer sk_...`` or HTTP Basic
with the key as user name and an empty password."""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import Request

from pocketpay.sandbox.errors import authentication

_MISSING = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
)


def presented_key(authorization: str) -> str | None:
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def mask(key: str) -> str:
    return f"{key[:8]}{'*' * 4}{key[-4:]}" if len(key) > 12 else "****"


def require_key(expected: str, request: Request) -> str:
    """The caller's API key if it is ``expected``; else a 401 Stripe error."""
    header = request.headers.get("authorization", "")
    key = presented_key(header)
    if key is None:
        raise authentication(_MISSING)
    if not hmac.compare_digest(key.encode(), expected.encode()):
        raise authentication(f"Invalid API Key provided: {mask(key)}")
    return key
