from __future__ import annotations

import pytest

from pocketpay.kit.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
