"""Sign-up, login and refresh-token rotation. Passwords are hashed with argon2id; refresh
tokens are opaque, stored as SHA-256 hashes, single use: a used one no longer works, and
presenting a used one revokes its whole family (theft detection, as OAuth 2.1 recommends).

``AuthService.authenticate`` is how every authenticated request is let in: a bearer that is
an access token (JWT) or an API key (``pp_sk_...``, ``api_keys.py``), then the key's scopes,
then the rate limits of the key and of its user (``ratelimit.py``)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Request
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pocketpay.gateway.api_keys import ApiKeyService, is_api_key
from pocketpay.gateway.models import outbox, refresh_tokens, users
from pocketpay.gateway.ratelimit import RateLimits
from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.db import single_statements
from pocketpay.kit.errors import AppError, Unauthorized
from pocketpay.kit.ids import new_id
from pocketpay.kit.logging import bind_principal
from pocketpay.kit.outbox import add_event
from pocketpay.kit.tokens import Principal, TokenCodec

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_DUMMY_HASH = _hasher.hash("timing-equalizer")


_BY_EMAIL = select(users).where(users.c.email == bindparam("w_email"))  # built once


class EmailTaken(AppError):
    code = "auth.email_taken"
    status = 409
    title = "Email already registered"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def user_created(conn: AsyncConnection, user_id: str, email: str, now: datetime) -> None:
    """``gateway.user.created``, in the sign-up's transaction: how notifications learns where
    to email the user (it keeps its own copy; components never read each other's tables)."""
    data = {"user_id": user_id, "email": email}
    await add_event(conn, outbox, "gateway.user.created", data, now, event_id=f"evt_{user_id}")


def user_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "email": row.email,
        "name": row.name,
        "role": row.role,
        "created_at": aware(row.created_at).isoformat(),
    }


class AuthService:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        tokens: TokenCodec,
        refresh_ttl_seconds: int,
        admin_emails: list[str],
        keys: ApiKeyService,
        limits: RateLimits,
    ) -> None:
        self._engine = engine
        self._reads = single_statements(engine)  # reads: one round trip each on PostgreSQL
        self._clock = clock
        self.tokens = tokens
        self._refresh_ttl = refresh_ttl_seconds
        self._admins = {e.lower() for e in admin_emails}
        self._keys = keys
        self._limits = limits

    async def authenticate(self, token: str, request: Request) -> Principal:
        """The caller of ``request`` from its bearer ``token``: an access token, or an API key
        (looked up on every request, so a revoked key fails at once) whose scopes must allow
        this route. Then the rate limits: 429 ``rate_limited`` past the key's or the user's."""
        if is_api_key(token):
            caller = await self._keys.resolve(token)
            route = request.scope.get("route")
            caller.check_scope(request.method, getattr(route, "path", request.url.path))
            bind_principal(caller.principal.user_id, caller.key_id)
            self._limits.caller(caller.principal.user_id, caller.key_id)
            return caller.principal
        principal = self.tokens.verify(token)
        bind_principal(principal.user_id)
        self._limits.caller(principal.user_id, None)
        return principal

    def revalidator(self, token: str) -> Callable[[], Awaitable[bool]] | None:
        """For a long-lived connection (a stream): asks again whether an API key still works
        (revoked, or rolled past its overlap: False). None for an access token, whose ``exp``
        ends it. A database that cannot be asked is not a revocation: True."""
        if not is_api_key(token):
            return None

        async def still_valid() -> bool:
            try:
                await self._keys.resolve(token)
            except AppError:
                return False
            except Exception:
                return True
            return True

        return still_valid

    async def signup(self, email: str, password: str, name: str) -> dict[str, Any]:
        email = email.lower()
        now = self._clock.now()
        uid = new_id("usr")
        role = "admin" if email in self._admins else "user"
        # argon2 is deliberately slow (tens of ms of CPU): off the event loop, and before the
        # transaction rather than inside it.
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(users).values(
                        id=uid,
                        email=email,
                        name=name,
                        password_hash=password_hash,
                        role=role,
                        created_at=now,
                    )
                )
                await user_created(conn, uid, email, now)
                row = (await conn.execute(select(users).where(users.c.id == uid))).one()
        except IntegrityError as exc:
            raise EmailTaken("An account with this email exists; log in instead.") from exc
        return await self._session(row, new_id("fam"), now)

    async def login(self, email: str, password: str) -> dict[str, Any]:
        async with self._reads.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.email == email.lower()))).first()
        try:
            await asyncio.to_thread(
                _hasher.verify, row.password_hash if row else _DUMMY_HASH, password
            )
        except (VerificationError, InvalidHashError):
            row = None
        if row is None:
            raise Unauthorized("Wrong email or password.", code="auth.invalid_credentials")
        return await self._session(row, new_id("fam"), self._clock.now())

    async def refresh(self, token: str, *, reuse_grace_seconds: float = 0.0) -> dict[str, Any]:
        """A new session for a refresh token, which is single use: presented again, its whole
        family is revoked (a stolen token). ``reuse_grace_seconds`` (the web app's cookie: two
        tabs renewing the same session at once) lets a token used that recently renew once
        more in its family instead."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            rt = (
                await conn.execute(
                    select(refresh_tokens).where(refresh_tokens.c.token_hash == _sha(token))
                )
            ).first()
            if rt is None or aware(rt.expires_at) <= now:
                raise Unauthorized(
                    "The refresh token is not valid; log in again.",
                    code="auth.invalid_refresh_token",
                )
            used = await conn.execute(
                update(refresh_tokens)
                .where(
                    refresh_tokens.c.token_hash == rt.token_hash,
                    refresh_tokens.c.used_at.is_(None),
                )
                .values(used_at=now)
            )
            racing = (
                rt.used_at is not None
                and (now - aware(rt.used_at)).total_seconds() <= reuse_grace_seconds
            )
            if used.rowcount == 0 and not racing:
                await conn.execute(
                    delete(refresh_tokens).where(refresh_tokens.c.family == rt.family)
                )
                reuse = True
            else:
                reuse = False
            row = (await conn.execute(select(users).where(users.c.id == rt.user_id))).one()
        if reuse:
            raise Unauthorized(
                "This refresh token was already used; log in again.",
                code="auth.invalid_refresh_token",
            )
        return await self._session(row, rt.family, now)

    async def revoke(self, token: str) -> None:
        """Log out: the refresh token's whole family stops working (idempotent; an unknown
        token revokes nothing). Access tokens already issued live out their short TTL."""
        async with self._engine.begin() as conn:
            family = (
                await conn.execute(
                    select(refresh_tokens.c.family).where(
                        refresh_tokens.c.token_hash == _sha(token)
                    )
                )
            ).scalar()
            if family is not None:
                await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.family == family))

    async def _session(self, row: Any, family: str, now: datetime) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(32)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(refresh_tokens).values(
                    token_hash=_sha(refresh),
                    user_id=row.id,
                    family=family,
                    expires_at=now + timedelta(seconds=self._refresh_ttl),
                )
            )
        access = self.tokens.issue(Principal(row.id, row.role, row.email), now)
        return {
            "user": user_view(row),
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": self.tokens.ttl_seconds,
        }

    async def get_user(self, user_id: str) -> dict[str, Any]:
        async with self._reads.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        if row is None:
            raise Unauthorized("This account no longer exists.", code="auth.invalid_token")
        return user_view(row)

    async def find_by_id(self, user_id: str) -> dict[str, Any] | None:
        async with self._reads.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
        return user_view(row) if row else None

    async def find_by_email(self, email: str) -> dict[str, Any] | None:
        async with self._reads.connect() as conn:
            row = (await conn.execute(_BY_EMAIL, {"w_email": email.lower()})).first()
        return user_view(row) if row else None
