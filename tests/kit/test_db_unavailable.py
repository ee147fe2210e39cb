"""``kit.db.is_unavailable``: which failures mean "the database could not be used" (retry,
never dead-letter) and which mean the statement itself failed."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError


class _Orig(Exception):
    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _dbapi(message: str, sqlstate: str | None, cls: type[DBAPIError] = DBAPIError) -> DBAPIError:
    return cls("SELECT 1", {}, _Orig(message, sqlstate))


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError("refused"),
        TimeoutError(),
        _dbapi("terminating connection due to administrator command", "57P01"),
        _dbapi("the database system is starting up", "57P03"),
        _dbapi("connection failure", "08006"),
        _dbapi("sorry, too many clients already", "53300"),
        _dbapi('database "x" is not currently accepting connections', "55000"),
        _dbapi("server closed the connection", None, OperationalError),
    ],
)
def test_outages_are_unavailable(exc: BaseException) -> None:
    from pocketpay.kit.db import is_unavailable

    assert is_unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad data"),
        _dbapi("duplicate key value violates unique constraint", "23505", IntegrityError),
        _dbapi("relation is locked", "55P03"),
        _dbapi("cannot drop the currently open database", "55006"),
        _dbapi("division by zero", "22012"),
    ],
)
def test_statement_failures_are_not(exc: BaseException) -> None:
    from pocketpay.kit.db import is_unavailable

    assert not is_unavailable(exc)
