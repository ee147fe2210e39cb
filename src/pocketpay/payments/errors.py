"""Payments business errors (stable codes)."""

from __future__ import annotations

from pocketpay.kit.errors import AppError


class InvalidTransition(AppError):
    code = "payments.invalid_transition"
    status = 409
    title = "Invalid payment state transition"


class PaymentNotFound(AppError):
    code = "not_found"
    status = 404
    title = "Not found"


class RefundExceedsCaptured(AppError):
    code = "payments.refund_exceeds_captured"
    status = 422
    title = "Refund exceeds the captured amount"


class NotRefundable(AppError):
    """An invoice's payment: its money is the platform's revenue, never the user's wallet, so
    it is given back by refunding the invoice (billing), not the payment."""

    code = "payments.not_refundable"
    status = 409
    title = "Payment not refundable"


class CaptureExceedsAuthorized(AppError):
    code = "payments.capture_exceeds_authorized"
    status = 422
    title = "Capture exceeds the authorized amount"


class UnknownPaymentMethod(AppError):
    code = "payments.invalid_payment_method"
    status = 422
    title = "Invalid payment method"


class ProviderUnavailable(AppError):
    code = "payments.provider_unavailable"
    status = 503
    title = "Payment provider unavailable"


class PaymentsBusy(AppError):
    """Admission control (``payments.admission``) sheds creates while the PSP backlog is full."""

    code = "payments.busy"
    status = 503
    title = "Too many payments waiting for authorization"
    retry_after_seconds = 1

    @classmethod
    def shed(cls, detail: str, retry_after: int = retry_after_seconds) -> PaymentsBusy:
        return cls(
            f"{detail} Retry after {retry_after} s with the same Idempotency-Key.",
            headers={"Retry-After": str(retry_after)},
        )


class CardDeclined(AppError):
    """The PSP refused to keep a card (saving a payment method is answered at once)."""

    code = "payments.card_declined"
    status = 402
    title = "Card declined"


class InvalidDestination(AppError):
    code = "payouts.invalid_destination"
    status = 422
    title = "Invalid bank account"


class PayoutNotCancelable(AppError):
    code = "payouts.not_cancelable"
    status = 409
    title = "Payout not cancelable"


class DisputeNotOpen(AppError):
    code = "disputes.not_open"
    status = 409
    title = "Dispute not open for evidence"
