"""A Stripe-compatible test PSP (in the spirit of Stripe test mode) that the official ``stripe``
SDK talks to unchanged: PaymentIntents with test cards, charges, refunds, balance
transactions that settle by the injected clock, Idempotency-Key, signed webhooks, and
switchable faults. State is kept in the sandbox's own database (``storage``).
"""

from pocketpay.sandbox.app import create_app
from pocketpay.sandbox.sandbox import Sandbox

__all__ = ["Sandbox", "create_app"]
