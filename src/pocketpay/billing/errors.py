"""Billing business errors (stable codes)."""

from __future__ import annotations

from pocketpay.kit.errors import AppError


class PlanArchived(AppError):
    code = "billing.plan_archived"
    status = 409
    title = "The plan is archived"


class InvalidTransition(AppError):
    code = "billing.invalid_transition"
    status = 409
    title = "The subscription's or invoice's status does not allow this"


class CurrencyMismatch(AppError):
    code = "billing.currency_mismatch"
    status = 422
    title = "The plan's currency is not the subscription's"


class PaymentMethodRequired(AppError):
    code = "billing.payment_method_required"
    status = 422
    title = "A card subscription needs a saved payment method"


class TestClockDisabled(AppError):
    code = "not_found"
    status = 404
    title = "Not found"


class TestClockBackwards(AppError):
    code = "billing.test_clock_backwards"
    status = 422
    title = "The test clock only moves forward"
