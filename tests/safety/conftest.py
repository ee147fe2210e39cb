"""Every fault test starts and ends with no failpoint armed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pocketpay.kit import failpoints


@pytest.fixture(autouse=True)
def _disarm() -> Iterator[None]:
    failpoints.disarm()
    yield
    failpoints.disarm()
