"""The chart of accounts and transfer codes.

Account ids are deterministic so a caller never has to look one up before moving money:
``wal_<owner>_<CUR>`` for a user's wallet, ``debt_<owner>_<CUR>`` for what a user owes
(a lost or open dispute their wallet could not cover), ``sys_<name>_<CUR>`` for system
accounts. Wallets are guarded (debits must not exceed credits) and live in one balance row;
debt accounts are unguarded (their debt is debits_posted - credits_posted, never negative:
only a repayment credits them, for at most the debt) and live in one balance row too, so both
get a balance history; system accounts are unguarded and spread over ``SYSTEM_SHARDS`` balance
rows so that the hot PSP receivable account is not one row every capture fights over.
"""

from __future__ import annotations

from enum import IntEnum

SYSTEM_SHARDS = 16


class AccountCode(IntEnum):
    WALLET = 1
    DEBT = 2  # what a user owes per currency (debits_posted - credits_posted)
    PSP_RECEIVABLE = 10  # card money the PSP owes us, until it is available
    PSP_SETTLED = 11  # money the PSP made available (our cash at the PSP)
    DISPUTES = 12  # money held for open disputes (nets to zero per closed dispute)
    REVENUE = 20  # what users paid for invoices (billing): by card, or from their wallet
    FX_LIQUIDITY = 30  # the platform's position per currency: sold currency in, bought out
    FX_FEES = 31  # conversion fees, rounding remainders included


class TransferCode(IntEnum):
    CARD_AUTHORIZATION = 100  # pending: PSP receivable -> wallet
    CARD_CAPTURE = 101  # posting of the authorization hold
    SETTLEMENT = 102  # PSP settled <- PSP receivable
    REFUND = 103  # wallet -> PSP receivable (pending while the PSP refunds)
    WALLET_TRANSFER = 104  # wallet -> wallet
    INVOICE_FROM_WALLET = 105  # wallet -> revenue (an invoice paid from the wallet)
    FX_SELL = 106  # wallet -> FX liquidity, sell currency (the amount converted)
    FX_FEE = 107  # wallet -> FX fees, sell currency
    FX_BUY = 108  # FX liquidity -> wallet, buy currency
    PAYOUT = 109  # wallet -> PSP settled (pending while the PSP pays the bank account out)
    # Disputes (chargebacks): what the disputed payment credited is held while it is open;
    # the part the wallet no longer has becomes the owner's debt at once.
    DISPUTE_HOLD = 110  # pending: wallet (or revenue) -> disputes; voided if won, posted if lost
    DISPUTE_DEBT = 111  # debt -> disputes (the shortfall the wallet could not hold)
    DISPUTE_REINSTATE = 112  # disputes -> wallet, the debt part of a won dispute
    DISPUTE_LOSS = 113  # disputes -> PSP settled (the PSP gave the money back to the cardholder)
    DEBT_REPAYMENT = 114  # wallet -> debt (the next credits repay the debt first)


SYSTEM_NAMES = {
    "psp_receivable": AccountCode.PSP_RECEIVABLE,
    "psp_settled": AccountCode.PSP_SETTLED,
    "disputes": AccountCode.DISPUTES,
    "revenue": AccountCode.REVENUE,
    "fx_liquidity": AccountCode.FX_LIQUIDITY,
    "fx_fees": AccountCode.FX_FEES,
}


def wallet_account_id(owner_id: str, currency: str) -> str:
    return f"wal_{owner_id}_{currency}"


def debt_account_id(owner_id: str, currency: str) -> str:
    return f"debt_{owner_id}_{currency}"


def debt_of_wallet(wallet_id: str) -> str:
    """``debt_<owner>_<CUR>`` of the wallet ``wal_<owner>_<CUR>``."""
    assert wallet_id.startswith("wal_"), wallet_id
    return "debt_" + wallet_id[4:]


def wallet_of_debt(debt_id: str) -> str:
    """``wal_<owner>_<CUR>`` of the debt account ``debt_<owner>_<CUR>``."""
    assert debt_id.startswith("debt_"), debt_id
    return "wal_" + debt_id[5:]


def system_account_id(name: str, currency: str) -> str:
    if name not in SYSTEM_NAMES:
        raise ValueError(f"unknown system account {name!r}")
    return f"sys_{name}_{currency}"


def parse_account_id(account_id: str) -> tuple[AccountCode, str | None, str]:
    """(code, owner or None, currency) of a deterministic account id."""
    kind, _, rest = account_id.partition("_")
    head, _, currency = rest.rpartition("_")
    if kind == "wal" and head and len(currency) == 3:
        return AccountCode.WALLET, head, currency
    if kind == "debt" and head and len(currency) == 3:
        return AccountCode.DEBT, head, currency
    if kind == "sys" and head in SYSTEM_NAMES and len(currency) == 3:
        return SYSTEM_NAMES[head], None, currency
    raise ValueError(f"not a ledger account id: {account_id!r}")


def is_guarded(code: AccountCode) -> bool:
    return code == AccountCode.WALLET


def is_user_account(code: AccountCode) -> bool:
    """A user's own account (a wallet or a debt): one balance row, with a balance history."""
    return code in (AccountCode.WALLET, AccountCode.DEBT)


def shard_count(code: AccountCode) -> int:
    return 1 if is_user_account(code) else SYSTEM_SHARDS
