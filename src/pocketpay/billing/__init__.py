"""Billing: plans, subscriptions, invoices, renewals and dunning, on the ledger."""
