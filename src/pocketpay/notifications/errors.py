"""Notifications business errors (stable codes). Refused URLs are ``targets.TargetRefused``."""

from __future__ import annotations

from pocketpay.kit.errors import AppError


class UnknownEventType(AppError):
    code = "notifications.unknown_event_type"
    status = 422
    title = "No such event type"


class EndpointLimit(AppError):
    code = "notifications.endpoint_limit"
    status = 409
    title = "Too many webhook endpoints"


class EndpointDisabled(AppError):
    code = "notifications.endpoint_disabled"
    status = 409
    title = "The webhook endpoint is disabled"
