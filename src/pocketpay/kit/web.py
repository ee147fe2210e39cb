"""What server-rendered pages share (the operators' dashboard and the users' web app): a
per-response nonce and the strict security headers that go with it."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def security_headers(nonce: str, login_url: str = "") -> dict[str, str]:
    """A strict CSP: only this page's nonce'd scripts (inline or from this origin), fetch to
    self (and the login service when it lives elsewhere), styles from self or inline."""
    connect = "'self'"
    parts = urlsplit(login_url)
    if parts.scheme in ("http", "https") and parts.netloc:
        connect += f" {parts.scheme}://{parts.netloc}"
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
        f"connect-src {connect}; img-src 'self' data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
