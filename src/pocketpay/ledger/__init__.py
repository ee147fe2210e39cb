"""Ledger: double-entry accounts and immutable transfers (TigerBeetle's vocabulary), wallets."""
