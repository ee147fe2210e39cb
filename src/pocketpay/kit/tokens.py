"""JWT access tokens: HS256 pinned, with ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` and ``role``.

Domain-free so any component (gateway, monitor) can verify a bearer token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from pocketpay.kit.errors import Unauthorized

ALGORITHM = "HS256"


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
        return Principal(
            str(claims["sub"]), str(claims.get("role", "user")), str(claims.get("email", ""))
        )
