"""Server-rendered dashboard: Jinja2 templates, one panel fragment re-rendered on every update.

The page and the live stream share ``_panel.html``: the stream sends the rendered fragment and
the page swaps it in, so there is one rendering of the dashboard (no second copy in JavaScript)
and everything is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from pocketpay.monitor.rules import FLAPPING_SUFFIX, format_duration
from pocketpay.monitor.service import Monitor

TEMPLATES_DIR = Path(__file__).parent / "templates"
RECENT_ALERTS = 20

_RULE_TITLES = {
    "not_ready": "Not ready",
    "ledger_lag": "Ledger consumer lag",
    "psp_error_rate": "PSP error rate",
    "stuck_attempts": "Stuck PSP attempts",
}


def rule_title(rule: str) -> str:
    base = rule.removesuffix(FLAPPING_SUFFIX)
    title = _RULE_TITLES.get(base, base.replace("_", " ").capitalize())
    return f"{title} (flapping)" if rule.endswith(FLAPPING_SUFFIX) else title


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f} %"


class Dashboard:
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def ago(self, value: str | None) -> str:
        """``"12s ago"`` from an ISO timestamp, measured on the monitor's clock."""
        if not value:
            return "never"
        seconds = (self.monitor.clock.now() - datetime.fromisoformat(value)).total_seconds()
        return "just now" if seconds < 1 else f"{format_duration(seconds)} ago"

    def panel_context(self) -> dict[str, Any]:
        return {
            "status": self.monitor.status(),
            "alerts": [r.to_dict() for r in self.monitor.store.recent(RECENT_ALERTS)],
            "ago": self.ago,
            "percent": percent,
            "rule_title": rule_title,
        }

    def panel(self) -> str:
        return self.env.get_template("_panel.html").render(self.panel_context())

    def page(self, *, base: str, nonce: str, user: str) -> str:
        context = self.panel_context() | {"base": base, "nonce": nonce, "user": user}
        return self.env.get_template("dashboard.html").render(context)

    def login(self, *, base: str, nonce: str, login_url: str, next_url: str) -> str:
        return self.env.get_template("login.html").render(
            base=base, nonce=nonce, login_url=login_url, next_url=next_url
        )
