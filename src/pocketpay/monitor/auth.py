"""Admin access to the monitor: a JWT from ``Authorization: Bearer`` or the ``pp_admin`` cookie.

APIs answer 401/403 problem+json; pages send a signed-out browser to ``/admin/login`` instead.
The cookie is set by the monitor itself (``POST /admin/session``, after verifying the token), so
it can be ``HttpOnly`` and ``SameSite=Strict``: page scripts never keep the token around.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request

from pocketpay.kit.errors import Forbidden, Unauthorized
from pocketpay.kit.tokens import Principal, TokenCodec

COOKIE = "pp_admin"
_MAX_TOKEN_CHARS = 4096


def token_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()[:_MAX_TOKEN_CHARS]
    cookie = request.cookies.get(COOKIE, "")
    return cookie[:_MAX_TOKEN_CHARS] or None


def admin_from_token(tokens: TokenCodec, token: str | None) -> Principal:
    """The admin the token names; Unauthorized without a valid one, Forbidden for non-admins."""
    if not token:
        raise Unauthorized(
            "Sign in as an admin to see this.",
            headers={"WWW-Authenticate": 'Bearer realm="pocketpay-monitor"'},
        )
    principal = tokens.verify(token)
    if not principal.is_admin:
        raise Forbidden("This needs the admin role.", code="auth.admin_required")
    return principal


def require_admin(request: Request) -> Principal:
    """FastAPI dependency for admin-only APIs."""
    tokens: TokenCodec = request.app.state.tokens
    return admin_from_token(tokens, token_from(request))


def safe_next(target: str | None, default: str) -> str:
    """Only a path on this host: ``next`` must never turn the login into an open redirect."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target:
        return default
    return target
