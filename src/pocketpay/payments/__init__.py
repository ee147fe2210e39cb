"""Payments: the payment state machine, attempts against the PSP, refunds, PSP webhooks."""
