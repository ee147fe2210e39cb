"""The web app's session: two HttpOnly cookies and CSRF protection for its forms.

* ``pocketpay_session`` holds the access token exactly as ``POST /api/v1/auth/login`` returns
  it (path ``/``), so the live stream (``GET /api/v1/stream``) accepts it as well;
* ``pocketpay_refresh`` holds the refresh token, sent only to ``/app/session/...`` (the refresh
  and log-out routes), so no other request ever carries it;
* both SameSite=Lax, Secure when the user reached us over https (the public URL's scheme or
  nginx's ``X-Forwarded-Proto``).

CSRF: every form carries ``csrf_token`` = HMAC(server secret, csrf seed | user id), the seed a
random HttpOnly cookie of its own. A cross-site page can neither read the cookie nor compute
the HMAC, and a token minted for one user is worthless in another user's session. A POST whose
``Origin`` is present and not ours is refused before the token is even looked at.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import Request, Response

from pocketpay.gateway.api_keys import is_api_key
from pocketpay.gateway.auth import AuthService
from pocketpay.kit.errors import AppError, Forbidden
from pocketpay.kit.tokens import Principal

SESSION_COOKIE = "pocketpay_session"
REFRESH_COOKIE = "pocketpay_refresh"
CSRF_COOKIE = "pocketpay_csrf"
SESSION_PATH = "/app/session"  # the refresh cookie's path: refresh and log out only
CSRF_FIELD = "csrf_token"
_SEED_BYTES = 24


class CsrfRefused(Forbidden):
    code = "web.csrf_failed"
    title = "Form refused"


class LoginRequired(AppError):
    """No valid session: pages answer with a redirect to the refresh route, then log in."""

    code = "web.login_required"
    status = 401
    title = "Log in"


class WebSessions:
    def __init__(
        self, auth: AuthService, secret: str, public_url: str, refresh_ttl_seconds: int
    ) -> None:
        self.auth = auth
        # A key of its own for CSRF tokens, derived from the server's secret.
        self._key = hmac.new(secret.encode(), b"pocketpay-web-csrf", hashlib.sha256).digest()
        self._public = urlsplit(public_url)
        self._refresh_ttl = refresh_ttl_seconds

    # -- who is signed in ---------------------------------------------------------------------

    async def principal(self, request: Request) -> Principal | None:
        """The signed-in user, or None (no cookie, or an expired or invalid token)."""
        token = request.cookies.get(SESSION_COOKIE)
        if not token or is_api_key(token):  # only access tokens we set; never an API key
            return None
        try:
            return await self.auth.authenticate(token, request)
        except AppError as exc:
            if exc.status == 401:
                return None
            raise

    async def require(self, request: Request) -> Principal:
        who = await self.principal(request)
        if who is None:
            raise LoginRequired("Log in to see this page.")
        return who

    # -- cookies ------------------------------------------------------------------------------

    def secure(self, request: Request) -> bool:
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        return "https" in (self._public.scheme, proto, request.url.scheme)

    def start(self, response: Response, request: Request, session: dict[str, object]) -> None:
        """Set both cookies from a session (login, sign-up or refresh answer)."""
        secure = self.secure(request)
        ttl = int(str(session["expires_in"]))
        _cookie(response, SESSION_COOKIE, str(session["access_token"]), ttl, "/", secure)
        refresh = str(session["refresh_token"])
        _cookie(response, REFRESH_COOKIE, refresh, self._refresh_ttl, SESSION_PATH, secure)

    def end(self, response: Response, request: Request) -> None:
        secure = self.secure(request)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, secure=secure)
        response.delete_cookie(REFRESH_COOKIE, path=SESSION_PATH, httponly=True, secure=secure)

    # -- CSRF ---------------------------------------------------------------------------------

    def csrf_seed(self, request: Request) -> str:
        """This browser's seed: its cookie, or a new one that ``keep_seed`` then sets."""
        seed = request.cookies.get(CSRF_COOKIE, "")
        if len(seed) < 16:
            seed = getattr(request.state, "csrf_seed", "") or secrets.token_urlsafe(_SEED_BYTES)
            request.state.csrf_seed = seed
        return seed

    def keep_seed(self, response: Response, request: Request) -> None:
        seed = getattr(request.state, "csrf_seed", "")
        if seed:
            _cookie(response, CSRF_COOKIE, seed, None, "/", self.secure(request))

    def csrf_token(self, request: Request, user_id: str) -> str:
        message = f"{self.csrf_seed(request)}|{user_id}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def check_post(self, request: Request, sent: str, user_id: str) -> None:
        """Refuse a cross-site POST: a foreign Origin, or a missing or wrong token."""
        origin = request.headers.get("origin")
        if origin is not None and origin not in self.our_origins(request):
            raise CsrfRefused("This form was sent from another site; it was not accepted.")
        seed = request.cookies.get(CSRF_COOKIE, "")
        expected = self.csrf_token(request, user_id) if seed else ""
        if not sent or not expected or not hmac.compare_digest(sent, expected):
            raise CsrfRefused(
                "This form has expired or did not come from this site. Go back, reload the "
                "page and send it again."
            )

    def our_origins(self, request: Request) -> set[str]:
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        scheme = proto or request.url.scheme
        origins = {f"{scheme}://{request.headers.get('host', '')}"}
        if self._public.scheme and self._public.netloc:
            origins.add(f"{self._public.scheme}://{self._public.netloc}")
        return origins


def _cookie(
    response: Response, name: str, value: str, max_age: int | None, path: str, secure: bool
) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path=path, httponly=True, samesite="lax", secure=secure
    )
