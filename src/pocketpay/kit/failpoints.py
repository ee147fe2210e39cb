"""Failpoints: named places in the code where a test makes the process fail on purpose.

A money flow calls ``await failpoint("payments.refund.after_hold")`` at each phase boundary.
Unarmed (production), the call is one dict lookup. A test arms a point to:

* ``raise``: raise ``FailpointError`` there (a dependency that errored),
* ``crash``: raise ``Crash``, a ``BaseException`` nothing in the code catches, so the flow stops
  exactly there as if the process had died (in-process tests); with ``hard=True`` the process
  really exits (``os._exit(137)``, as SIGKILL would), for multi-process tests,
* ``delay``: sleep ``seconds`` there (a slow dependency, a request that times out upstream),
* ``block``: wait there until the test calls ``release(name)`` (to order two racing flows
  exactly, without sleeping).

``count`` limits how many times the point fires (then it disarms itself), so "crash once, then
let the retry through" is one line. Processes started by tests are armed from the environment:
``POCKETPAY_FAILPOINTS="payments.authorize.after_psp=crash:hard;ledger.x=delay:2"``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Literal

Action = Literal["raise", "crash", "delay", "block"]


class FailpointError(Exception):
    """Raised by an armed ``raise`` failpoint."""


class Crash(BaseException):
    """Raised by an armed ``crash`` failpoint: nothing may catch it, the flow just stops."""


@dataclass
class _Armed:
    action: Action
    count: int | None = None  # None: fire every time
    seconds: float = 0.0
    hard: bool = False


_armed: dict[str, _Armed] = {}
_hits: dict[str, int] = {}
_gates: dict[str, asyncio.Event] = {}


def arm(
    name: str,
    action: Action,
    *,
    count: int | None = 1,
    seconds: float = 0.0,
    hard: bool = False,
) -> None:
    _armed[name] = _Armed(action, count, seconds, hard)
    if action == "block":
        _gates[name] = asyncio.Event()


def release(name: str) -> None:
    """Let every flow waiting at a ``block`` point go on."""
    gate = _gates.pop(name, None)
    if gate is not None:
        gate.set()


def disarm(name: str | None = None) -> None:
    """Disarm one point, or every point (and forget the hit counts) when ``name`` is None."""
    if name is None:
        _armed.clear()
        _hits.clear()
        for gate in list(_gates):
            release(gate)
    else:
        _armed.pop(name, None)
        release(name)


def hits(name: str) -> int:
    """How many times an armed point fired."""
    return _hits.get(name, 0)


def _fire(name: str) -> _Armed | None:
    armed = _armed.get(name)
    if armed is None:
        return None
    if armed.count is not None:
        armed.count -= 1
        if armed.count <= 0:
            del _armed[name]
    _hits[name] = _hits.get(name, 0) + 1
    return armed


async def failpoint(name: str) -> None:
    armed = _fire(name)
    if armed is None:
        return
    if armed.action == "delay":
        await asyncio.sleep(armed.seconds)
    elif armed.action == "block":
        gate = _gates.get(name)
        if gate is not None:
            await gate.wait()
    elif armed.action == "raise":
        raise FailpointError(f"failpoint {name}")
    else:
        if armed.hard:
            os._exit(137)
        raise Crash(name)


def arm_from_env(value: str | None = None) -> None:
    """Arm points from ``POCKETPAY_FAILPOINTS`` (``name=action[:arg]`` separated by ``;``).

    ``crash:hard`` exits the process; ``delay:<seconds>``; ``raise``. Each fires once unless
    the spec ends with ``*`` (``raise*``: every time)."""
    spec = os.environ.get("POCKETPAY_FAILPOINTS", "") if value is None else value
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, rest = item.partition("=")
        forever = rest.endswith("*")
        action, _, arg = rest.rstrip("*").partition(":")
        if action not in ("raise", "crash", "delay", "block"):
            raise ValueError(f"failpoint {name}: unknown action {action!r}")
        arm(
            name.strip(),
            action,  # type: ignore[arg-type]
            count=None if forever else 1,
            seconds=float(arg) if action == "delay" and arg else 0.0,
            hard=action == "crash" and arg == "hard",
        )
