"""The health monitor: polls every component's readiness, alerts on Slack and email, and serves
``/status``, ``/alerts`` and the ``/admin/health`` dashboard."""

from pocketpay.monitor.app import create_app

__all__ = ["create_app"]
