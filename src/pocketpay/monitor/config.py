"""What the monitor polls: one target per component, from ``MonitorSettings.targets``.

A target is a component name and the base URL its health routes hang off (``<base>/readyz``).
In embedded mode the runtime passes the ``/components/<component>/`` paths of the one process; in
scale mode every component's own URL. Two components also serve an extra signal the alert rules
need: the ledger its consumer backlog, payments its PSP call statistics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pocketpay.settings import MonitorSettings

READY_PATH = "/readyz"
BACKLOG_PATH = "/health/backlog"  # ledger: {"pending": int, "oldest_age_seconds": float}
PROVIDER_PATH = "/health/provider"  # payments: PSP status, breaker and 5-minute call stats

# component -> extra signal path polled alongside /readyz
EXTRA_SIGNALS: dict[str, str] = {"ledger": BACKLOG_PATH, "payments": PROVIDER_PATH}

# A poll must finish well before the next one starts, whatever the settings say.
_MAX_TIMEOUT_SHARE = 0.8


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    @property
    def extra_path(self) -> str | None:
        return EXTRA_SIGNALS.get(self.name)


def targets_from_settings(settings: MonitorSettings) -> list[Target]:
    """Targets in a stable (sorted) order so the dashboard does not reshuffle."""
    targets = [Target(name, url) for name, url in sorted(settings.targets.items()) if url]
    assert len({t.name for t in targets}) == len(targets)
    return targets


def embedded_targets(base_url: str, components: Iterable[str]) -> dict[str, str]:
    """``{component: <base_url>/components/<component>}`` for the components of one process."""
    base = base_url.rstrip("/")
    return {c: f"{base}/components/{c}" for c in components if c != "monitor"}


def effective_poll_timeout(settings: MonitorSettings) -> float:
    """The per-target timeout, kept below the interval so polls can never overlap."""
    return max(
        0.001, min(settings.poll_timeout_seconds, settings.interval_seconds * _MAX_TIMEOUT_SHARE)
    )
