"""List requests, Stripe's way: a page of at most ``limit`` objects, newest first, after
(``starting_after``) or before (``ending_before``) a cursor object, optionally within a
``created`` range (unix seconds). Domain-free: a component gives its query (already scoped to
the owner), its filters, its order columns and its created column; ``fetch_page`` does the
rest.

A cursor that names no object of that query is an error (``request.invalid_cursor``), not
"no cursor": silently answering the first page again would make a client loop forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from pocketpay.kit.errors import AppError

MAX_LIMIT = 100


class InvalidCursor(AppError):
    code = "request.invalid_cursor"
    status = 400
    title = "Invalid cursor"


class Page(BaseModel):
    """The window of a list request (the same fields on every list)."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    starting_after: str | None = None
    ending_before: str | None = None
    created_gte: int | None = Field(None, ge=0)
    created_gt: int | None = Field(None, ge=0)
    created_lte: int | None = Field(None, ge=0)
    created_lt: int | None = Field(None, ge=0)


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def created_filters(page: Page, created: Any) -> list[ColumnElement[bool]]:
    """The ``created[...]`` bounds of ``page`` on the column ``created``."""
    out: list[ColumnElement[bool]] = []
    if page.created_gte is not None:
        out.append(created >= _at(page.created_gte))
    if page.created_gt is not None:
        out.append(created > _at(page.created_gt))
    if page.created_lte is not None:
        out.append(created <= _at(page.created_lte))
    if page.created_lt is not None:
        out.append(created < _at(page.created_lt))
    return out


async def fetch_page(
    conn: AsyncConnection,
    scope: Select[Any],
    filters: Sequence[ColumnElement[bool]],
    order: Sequence[Any],
    id_column: Any,
    created: Any,
    page: Page,
    what: str,
) -> tuple[list[Row[Any]], bool]:
    """Rows of ``scope`` matching ``filters``, newest first (descending ``order``, a unique
    key), and whether more lie beyond them in the direction of travel. The cursor must be a
    row of ``scope`` (the owner's objects), whether or not it matches the filters."""
    if page.starting_after and page.ending_before:
        raise InvalidCursor("Send starting_after or ending_before, not both.")
    key = tuple_(*order) if len(order) > 1 else order[0]
    q = scope.where(*filters, *created_filters(page, created))
    cursor_id = page.starting_after or page.ending_before
    if cursor_id:
        found = (
            await conn.execute(scope.with_only_columns(*order).where(id_column == cursor_id))
        ).first()
        if found is None:
            which = "starting_after" if page.starting_after else "ending_before"
            raise InvalidCursor(f"{which} names no {what} of yours: pass an id from a list.")
        at = tuple_(*found) if len(order) > 1 else found[0]
        q = q.where(key < at) if page.starting_after else q.where(key > at)
    if page.ending_before:
        # The objects just newer than the cursor, read oldest first, answered newest first.
        rows = list((await conn.execute(q.order_by(*order).limit(page.limit + 1))).all())
        return list(reversed(rows[: page.limit])), len(rows) > page.limit
    descending = [c.desc() for c in order]
    rows = list((await conn.execute(q.order_by(*descending).limit(page.limit + 1))).all())
    return rows[: page.limit], len(rows) > page.limit


def next_cursor(page: Page, ids: Sequence[str], has_more: bool) -> str | None:
    """The cursor for the next page in the same direction, when there is one."""
    if not has_more or not ids:
        return None
    return ids[0] if page.ending_before else ids[-1]
