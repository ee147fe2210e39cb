"""JWT access tokens: HS256 pinned, with ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` and ``role``.

Domain-free so any component (gateway, monitor) can verify a bearer token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from pocketpay.kit.errors import Unauthorized

ALGORITHM = "HS256"
# Verified tokens kept, until their ``exp``: a client sends the same access token with every
# request for 15 minutes, and checking its signature and claims again was ~9 % of a payment
# create's CPU. A token string is immutable and signed, so its verdict cannot change before it
# expires (access tokens are not revocable; API keys are looked up on every request).
VERIFIED_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str  # "user" | "admin"
    email: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class TokenCodec:
    def __init__(self, secret: str, *, issuer: str, audience: str, ttl_seconds: int) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.ttl_seconds = ttl_seconds
        self._verified: dict[str, tuple[Principal, int]] = {}

    def issue(self, principal: Principal, now: datetime) -> str:
        claims = {
            "sub": principal.user_id,
            "role": principal.role,
            "email": principal.email,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_seconds)).timestamp()),
            "typ": "access",
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:  # PyJWT's own test: expired once now >= exp
                return known[0]
            del self._verified[token]
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized(
                "The access token has expired; refresh it.", code="auth.token_expired"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is not valid.", code="auth.invalid_token") from exc
        if claims.get("typ") != "access":
            raise Unauthorized("Not an access token.", code="auth.invalid_token")
        principal = Principal(
            str(claims["sub"]), str(claims.get("role", "user")), str(claims.get("email", ""))
        )
        if len(self._verified) >= VERIFIED_MAX:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (principal, int(claims["exp"]))
        return principal
