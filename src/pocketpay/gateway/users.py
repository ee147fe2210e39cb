"""Operator use cases on the gateway's users (``pocketpay user create|grant-admin|revoke-admin|
list``): the same table, password hashing and validation as sign-up, so an account made here
logs in like any other. Each use case is its own unit of work (the CLI is the entrypoint).

A role change is read at the next login or refresh: access tokens carry the role and live
``auth.access_ttl_seconds``. Revoking the admin role therefore also ends the user's refresh
tokens, so no new admin token is minted after it."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from argon2 import PasswordHasher
from pydantic import ValidationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.gateway.auth import EmailTaken, user_created, user_view
from pocketpay.gateway.models import refresh_tokens, users
from pocketpay.gateway.schemas import SignupIn
from pocketpay.kit.clock import Clock
from pocketpay.kit.errors import NotFound, ValidationFailed
from pocketpay.kit.ids import new_id

Role = Literal["user", "admin"]
_hasher = PasswordHasher()  # argon2id, the library's recommended parameters (as sign-up)


class UserNotFound(NotFound):
    code = "auth.user_not_found"
    title = "No such user"


def _invalid(exc: ValidationError) -> ValidationFailed:
    fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return ValidationFailed(f"Fix the user's details ({fields}).")


class UserAdmin:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    async def create(self, email: str, password: str, name: str, role: Role) -> dict[str, Any]:
        """A new account, as sign-up makes it (email lower-cased, password rules), with
        ``role``. ``auth.email_taken`` when the email has an account."""
        try:
            valid = SignupIn.model_validate({"email": email, "password": password, "name": name})
        except ValidationError as exc:
            raise _invalid(exc) from exc
        password_hash = await asyncio.to_thread(_hasher.hash, valid.password)
        uid, now = new_id("usr"), self._clock.now()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(users).values(
                        id=uid,
                        email=valid.email.lower(),
                        name=valid.name,
                        password_hash=password_hash,
                        role=role,
                        created_at=now,
                    )
                )
                await user_created(conn, uid, valid.email.lower(), now)
                row = (await conn.execute(select(users).where(users.c.id == uid))).one()
        except IntegrityError as exc:
            raise EmailTaken(f"{valid.email} has an account already; use grant-admin.") from exc
        return user_view(row)

    async def set_role(self, email: str, role: Role) -> dict[str, Any]:
        """Give the account of ``email`` the ``role`` (idempotent); ``auth.user_not_found``."""
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    update(users)
                    .where(users.c.email == email.lower())
                    .values(role=role)
                    .returning(*users.c)
                )
            ).first()
            if row is None:
                raise UserNotFound(
                    f"No account has the email {email}; `pocketpay user list` shows the accounts."
                )
            if role != "admin":
                await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.user_id == row.id))
        return user_view(row)

    async def list(self) -> list[dict[str, Any]]:
        """Every account, oldest first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(users).order_by(users.c.created_at, users.c.id))
            return [user_view(r) for r in rows]
