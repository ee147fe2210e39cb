"""Ledger business errors (stable codes)."""

from __future__ import annotations

from pocketpay.kit.errors import AppError


class InsufficientFunds(AppError):
    code = "ledger.insufficient_funds"
    status = 422
    title = "Insufficient funds"


class TransferIdConflict(AppError):
    code = "ledger.transfer_id_conflict"
    status = 409
    title = "Transfer id already used"


class PendingNotOpen(AppError):
    code = "ledger.pending_not_open"
    status = 409
    title = "Pending transfer is not open"


class InvalidTransfer(AppError):
    code = "ledger.invalid_transfer"
    status = 422
    title = "Invalid transfer"


class AccountNotFound(AppError):
    code = "ledger.account_not_found"
    status = 404
    title = "Account not found"


class TransferNotFound(AppError):
    code = "ledger.transfer_not_found"
    status = 404
    title = "Transfer not found"
