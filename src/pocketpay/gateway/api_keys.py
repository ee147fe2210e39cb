"""Secret API keys, as Stripe has them: ``pp_sk_<43 random characters>``, shown once.

A user creates, lists, revokes and rolls keys at ``/api/v1/api-keys``. A key is sent as
``Authorization: Bearer pp_sk_...`` wherever an access token is accepted and acts as its user,
never with admin rights, and within its scopes:

* ``full`` (the default): everything the user may do with an access token;
* ``read_only``: GET requests only;
* ``payments``: payments and refunds only (combined with ``read_only``: reading them only).

Keys cannot manage keys (as at Stripe, where keys are managed from the dashboard): the
``/api-keys`` endpoints want an access token from /auth/login, so a leaked key cannot mint
itself successors or revoke its owner's other keys.

The secret has 256 bits of entropy, so its SHA-256 is stored (no slow password hash: every
request a key authenticates looks it up by that hash, one indexed read). The read is made on
every request, with no cache, so a revocation holds at once in every gateway process.
``last_used_at`` is written at most once a minute per key, by a conditional UPDATE, not on
every request.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pocketpay.gateway.conventions import PublicRoute, operation_id, refuse_other_methods
from pocketpay.gateway.models import api_keys, users
from pocketpay.gateway.problems import AUTH, BEARER, BEARER_DESCRIPTION, BODY, LIST, problems
from pocketpay.kit.clock import Clock, aware
from pocketpay.kit.db import single_statements
from pocketpay.kit.errors import Conflict, Forbidden, NotFound, Unauthorized
from pocketpay.kit.ids import new_id
from pocketpay.kit.tokens import Principal

if TYPE_CHECKING:
    from pocketpay.gateway.auth import AuthService

PREFIX = "pp_sk_"
_ALPHABET = string.ascii_letters + string.digits
_SECRET_CHARS = 43  # 43 * log2(62) = 256 bits
MAX_ACTIVE_KEYS = 100  # per user: unrevoked keys
MAX_OVERLAP_SECONDS = 7 * 24 * 3600
TOUCH_EVERY_SECONDS = 60.0  # last_used_at precision
_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Scope = Literal["full", "read_only", "payments"]
# Route templates a ``payments`` key may reach.
PAYMENT_PATHS = ("/api/v1/payments", "/api/v1/refunds")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiKeyRevoked(Unauthorized):
    code = "auth.api_key_revoked"


class ApiKeyExpired(Unauthorized):
    code = "auth.api_key_expired"


class InvalidApiKey(Unauthorized):
    code = "auth.invalid_api_key"


class InsufficientScope(Forbidden):
    code = "auth.insufficient_scope"


def is_api_key(token: str) -> bool:
    return token.startswith(PREFIX)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> str:
    return PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_SECRET_CHARS))


# --- API bodies ---------------------------------------------------------------------------


def _full() -> list[Scope]:
    return ["full"]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "nightly payouts", "scopes": ["read_only"]}]},
    )

    name: str = Field(min_length=1, max_length=100, description="What the key is for.")
    scopes: list[Scope] = Field(
        default_factory=_full,
        min_length=1,
        max_length=3,
        description="`full` (default), or restrictions: `read_only` (GET only), "
        "`payments` (payments and refunds only). Both restrictions together: read payments.",
    )

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[Scope]) -> list[Scope]:
        unique = sorted(set(value))
        if "full" in unique and len(unique) > 1:
            raise ValueError("`full` cannot be combined with a restriction")
        return unique


class ApiKeyRoll(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_in_seconds: int = Field(
        0,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        description="How long the old key keeps working (0: revoked at once), so deployed "
        "clients can switch to the new secret.",
    )


class ApiKey(BaseModel):
    """An API key without its secret: ``hint`` shows its last characters."""

    object: Literal["api_key"] = "api_key"
    id: str = Field(examples=["key_01JDQ8Z3K4N5P6Q7R8S9T0V1W2"])
    name: str
    scopes: list[Scope]
    hint: str = Field(examples=["pp_sk_...x4Qz"])
    created_at: str
    last_used_at: str | None = Field(description="Within a minute.")
    expires_at: str | None = Field(description="Set when the key was rolled with an overlap.")
    revoked_at: str | None


class ApiKeyWithSecret(ApiKey):
    """A new key: the only answer that carries ``secret``. Keep it now; it is not shown again."""

    secret: str = Field(examples=["pp_sk_..."])


class ApiKeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApiKey]
    has_more: bool


def _iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value is not None else None


def _view(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        scopes=row.scopes.split(","),
        hint=row.hint,
        created_at=aware(row.created_at).isoformat(),
        last_used_at=_iso(row.last_used_at),
        expires_at=_iso(row.expires_at),
        revoked_at=_iso(row.revoked_at),
    )


# --- the service --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyCaller:
    """Who a key authenticates, and what it may do."""

    principal: Principal
    key_id: str
    scopes: frozenset[str]

    def check_scope(self, method: str, route_path: str) -> None:
        if "read_only" in self.scopes and method not in _READ_METHODS:
            raise InsufficientScope(
                "This API key is read-only: it may only send GET requests. "
                "Use a key with the `full` scope to make changes."
            )
        if "payments" in self.scopes and not route_path.startswith(PAYMENT_PATHS):
            raise InsufficientScope(
                "This API key is limited to payments and refunds (scope `payments`). "
                "Use a key with the `full` scope for other endpoints."
            )


# Built once, values bound at execution: this read runs on every request a key sends.
_BY_HASH = (
    select(
        api_keys.c.id,
        api_keys.c.user_id,
        api_keys.c.scopes,
        api_keys.c.last_used_at,
        api_keys.c.expires_at,
        api_keys.c.revoked_at,
        users.c.email,
    )
    .join_from(api_keys, users, users.c.id == api_keys.c.user_id)
    .where(api_keys.c.secret_hash == bindparam("w_hash"))
)
_TOUCH = (
    update(api_keys)
    .where(
        api_keys.c.id == bindparam("w_id"),
        or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= bindparam("w_cutoff")),
    )
    .values(last_used_at=bindparam("w_now"))
)


class ApiKeyService:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._single = single_statements(engine)
        self._clock = clock

    async def resolve(self, secret: str) -> KeyCaller:
        """The caller a secret names; 401 when it names no key, or a revoked or expired one."""
        now = self._clock.now()
        async with self._single.connect() as conn:
            row = (await conn.execute(_BY_HASH, {"w_hash": _hash(secret)})).first()
        if row is None:
            raise InvalidApiKey(
                "This API key does not exist. Check the key, or create one at /api/v1/api-keys.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if row.revoked_at is not None:
            raise ApiKeyRevoked(
                "This API key was revoked. Use another key, or create one at /api/v1/api-keys.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if row.expires_at is not None and aware(row.expires_at) <= now:
            raise ApiKeyExpired(
                "This API key was rolled and its overlap has ended. Use the new key.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        last = row.last_used_at
        if last is None or (now - aware(last)).total_seconds() >= TOUCH_EVERY_SECONDS:
            await self._touch(row.id, now)
        return KeyCaller(
            Principal(row.user_id, "user", row.email), row.id, frozenset(row.scopes.split(","))
        )

    async def _touch(self, key_id: str, now: datetime) -> None:
        # Conditional: of the requests (and processes) that saw a stale last_used_at, one
        # writes; the others match no row.
        cutoff = now - timedelta(seconds=TOUCH_EVERY_SECONDS)
        async with self._single.begin() as conn:
            await conn.execute(_TOUCH, {"w_id": key_id, "w_cutoff": cutoff, "w_now": now})

    async def create(self, user_id: str, body: ApiKeyCreate) -> ApiKeyWithSecret:
        async with self._engine.begin() as conn:
            active = (
                await conn.execute(
                    select(func.count())
                    .select_from(api_keys)
                    .where(api_keys.c.user_id == user_id, api_keys.c.revoked_at.is_(None))
                )
            ).scalar_one()
            if active >= MAX_ACTIVE_KEYS:
                raise Conflict(
                    f"You have {MAX_ACTIVE_KEYS} active API keys, the most allowed; "
                    "revoke one you no longer use.",
                    code="api_keys.limit_reached",
                )
            return await self._insert(conn, user_id, body.name, body.scopes)

    async def _insert(
        self, conn: Any, user_id: str, name: str, scopes: list[Scope]
    ) -> ApiKeyWithSecret:
        secret = _new_secret()
        row = {
            "id": new_id("key"),
            "user_id": user_id,
            "name": name,
            "secret_hash": _hash(secret),
            "hint": f"{PREFIX}...{secret[-4:]}",
            "scopes": ",".join(scopes),
            "created_at": self._clock.now(),
            "last_used_at": None,
            "expires_at": None,
            "revoked_at": None,
        }
        inserted = (await conn.execute(insert(api_keys).values(**row).returning(api_keys))).one()
        return ApiKeyWithSecret(**_view(inserted).model_dump(), secret=secret)

    async def list(self, user_id: str, limit: int, starting_after: str | None) -> ApiKeyList:
        query = select(api_keys).where(api_keys.c.user_id == user_id)
        if starting_after is not None:
            query = query.where(api_keys.c.id < starting_after)
        query = query.order_by(api_keys.c.id.desc()).limit(limit + 1)
        async with self._single.connect() as conn:
            rows = (await conn.execute(query)).all()
        return ApiKeyList(data=[_view(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def get(self, user_id: str, key_id: str) -> ApiKey:
        async with self._single.connect() as conn:
            return _view(await self._row(conn, user_id, key_id))

    async def revoke(self, user_id: str, key_id: str) -> ApiKey:
        """Revoked at once; revoking a revoked key changes nothing (idempotent)."""
        async with self._engine.begin() as conn:
            await self._row(conn, user_id, key_id)
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock.now())
            )
            return _view(await self._row(conn, user_id, key_id))

    async def roll(self, user_id: str, key_id: str, body: ApiKeyRoll) -> ApiKeyWithSecret:
        """A new key with the old one's name and scopes; the old one is revoked now, or
        expires after ``expires_in_seconds``."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            old = await self._row(conn, user_id, key_id)
            if old.revoked_at is not None or (
                old.expires_at is not None and aware(old.expires_at) <= now
            ):
                raise Conflict(
                    "This API key is revoked or expired; create a new key instead.",
                    code="api_keys.not_active",
                )
            if body.expires_in_seconds == 0:
                change: dict[str, Any] = {"revoked_at": now}
            else:
                ends = now + timedelta(seconds=body.expires_in_seconds)
                if old.expires_at is not None:  # rolled before: never extend its life
                    ends = min(ends, aware(old.expires_at))
                change = {"expires_at": ends}
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**change))
            return await self._insert(conn, user_id, old.name, old.scopes.split(","))

    async def _row(self, conn: Any, user_id: str, key_id: str) -> Any:
        row = (
            await conn.execute(
                select(api_keys).where(api_keys.c.id == key_id, api_keys.c.user_id == user_id)
            )
        ).first()
        if row is None:
            raise NotFound(f"You have no API key {key_id!r}.")
        return row


# --- routes -------------------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name=BEARER,
    description=BEARER_DESCRIPTION + " The /api-keys endpoints take an access token only.",
)
_SESSION = (*AUTH, "auth.session_required")


def api_keys_router(keys: ApiKeyService, auth: AuthService) -> APIRouter:
    r = APIRouter(
        prefix="/api/v1/api-keys",
        tags=["api keys"],
        route_class=PublicRoute,
        generate_unique_id_function=operation_id,
    )

    async def session(
        request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise Unauthorized(
                "Send 'Authorization: Bearer <access_token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if is_api_key(creds.credentials):
            raise Forbidden(
                "API keys cannot manage API keys; use an access token from /api/v1/auth/login.",
                code="auth.session_required",
            )
        return await auth.authenticate(creds.credentials, request)

    def key_id(value: str) -> str:
        if not (value.startswith("key_") and len(value) <= 64):
            raise NotFound(f"You have no API key {value[:64]!r}.")
        return value

    @r.post(
        "",
        status_code=201,
        response_model=ApiKeyWithSecret,
        responses=problems(*_SESSION, *BODY, "api_keys.limit_reached"),
    )
    async def create_api_key(
        body: ApiKeyCreate, who: Principal = Depends(session)
    ) -> ApiKeyWithSecret:
        """A new secret key. The answer is the only time its `secret` is shown."""
        return await keys.create(who.user_id, body)

    @r.get("", response_model=ApiKeyList, responses=problems(*_SESSION, *LIST))
    async def list_api_keys(
        who: Principal = Depends(session),
        limit: int = Query(20, ge=1, le=100),
        starting_after: str | None = Query(None, pattern=_ID_PATTERN),
    ) -> ApiKeyList:
        """Your keys, newest first, revoked ones included; never their secrets."""
        return await keys.list(who.user_id, limit, starting_after)

    @r.get("/{api_key_id}", response_model=ApiKey, responses=problems(*_SESSION, "not_found"))
    async def get_api_key(api_key_id: str, who: Principal = Depends(session)) -> ApiKey:
        return await keys.get(who.user_id, key_id(api_key_id))

    @r.post(
        "/{api_key_id}/revoke", response_model=ApiKey, responses=problems(*_SESSION, "not_found")
    )
    async def revoke_api_key(api_key_id: str, who: Principal = Depends(session)) -> ApiKey:
        """Revoked at once, in every gateway process: the next request with it gets 401."""
        return await keys.revoke(who.user_id, key_id(api_key_id))

    @r.post(
        "/{api_key_id}/roll",
        status_code=201,
        response_model=ApiKeyWithSecret,
        responses=problems(*_SESSION, *BODY, "not_found", "api_keys.not_active"),
    )
    async def roll_api_key(
        api_key_id: str, body: ApiKeyRoll | None = None, who: Principal = Depends(session)
    ) -> ApiKeyWithSecret:
        """A new secret for the key (same name and scopes); the old secret stops working now,
        or after `expires_in_seconds`."""
        return await keys.roll(who.user_id, key_id(api_key_id), body or ApiKeyRoll())

    refuse_other_methods(r)
    return r
