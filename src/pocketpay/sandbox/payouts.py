"""Payouts to bank accounts, with Stripe's test bank account numbers.

``POST /v1/tokens`` with ``bank_account[...]`` tokenizes a bank account (``btok_``, holding a
``ba_``); ``POST /v1/payouts`` sends available funds to it (``destination``: the ``ba_`` or the
``btok_``). A payout is ``pending`` at first (``POST /v1/payouts/{id}/cancel`` works only
then), ``in_transit`` after ``payout_transit_seconds`` and ``paid`` or ``failed`` at its
``arrival_date`` (``payout_arrival_seconds`` after creation), each on the sandbox's tick with
``payout.updated``, ``payout.paid`` or ``payout.failed``. The account number decides, as
Stripe's test numbers do (routing number ``110000000``): ``000123456789`` and any other number
is paid; ``000111111116`` fails with ``no_account``, ``000111111113`` ``account_closed``,
``000222222227`` ``insufficient_funds``, ``000333333335`` ``debit_not_authorized``,
``000444444440`` ``invalid_currency``. A failed or canceled payout's amount returns to the
balance.
"""

from __future__ import annotations

from typing import Any

from pocketpay.sandbox.errors import invalid_request
from pocketpay.sandbox.forms import (
    Params,
    check_known,
    get_metadata,
    get_positive_int,
    get_str,
)
from pocketpay.sandbox.models import BankAccount, Payout, new_id
from pocketpay.sandbox.state import Store

FAILING_ACCOUNTS = {
    "000111111116": "no_account",
    "000111111113": "account_closed",
    "000222222227": "insufficient_funds",
    "000333333335": "debit_not_authorized",
    "000444444440": "invalid_currency",
}
FAILURE_MESSAGES = {
    "no_account": "The bank account details on file are probably incorrect.",
    "account_closed": "The bank account has been closed.",
    "insufficient_funds": "The bank account has insufficient funds.",
    "debit_not_authorized": "Debit transactions are not approved on the bank account.",
    "invalid_currency": "The bank account cannot accept payments in this currency.",
}
TOKEN_PARAMS = frozenset({"bank_account", "expand"})
BANK_FIELDS = frozenset(
    {
        "country",
        "currency",
        "routing_number",
        "account_number",
        "account_holder_name",
        "account_holder_type",
    }
)
CREATE_PARAMS = frozenset(
    {
        "amount",
        "currency",
        "destination",
        "description",
        "metadata",
        "method",
        "statement_descriptor",
        "expand",
    }
)
CANCEL_PARAMS = frozenset({"expand"})


def create_token(store: Store, params: Params) -> dict[str, Any]:
    check_known(params, TOKEN_PARAMS)
    raw = params.get("bank_account")
    if not isinstance(raw, dict):
        raise invalid_request("Missing required param: bank_account.", param="bank_account")
    fields: Params = raw
    for name in fields:
        if name not in BANK_FIELDS:
            raise invalid_request(
                f"Received unknown parameter: bank_account[{name}]", param=f"bank_account[{name}]"
            )
    country = _bank_field(fields, "country").upper()
    routing = _bank_field(fields, "routing_number")
    number = _bank_field(fields, "account_number")
    if len(country) != 2 or not country.isalpha():
        raise invalid_request("Invalid country.", param="bank_account[country]")
    if len(routing) != 9 or not routing.isdigit():
        raise invalid_request(
            "Routing number must have 9 digits.", param="bank_account[routing_number]"
        )
    if not 4 <= len(number) <= 17 or not number.isdigit():
        raise invalid_request(
            "Account number must have 4 to 17 digits.", param="bank_account[account_number]"
        )
    token = new_id("btok")
    account = BankAccount(
        id=new_id("ba"),
        created=store.timestamp(),
        token=token,
        country=country,
        currency=(get_str(fields, "currency") or "usd").lower(),
        routing_number=routing,
        last4=number[-4:],
        account_holder_name=get_str(fields, "account_holder_name"),
        failure_code=FAILING_ACCOUNTS.get(number),
    )
    store.put(account)
    return {
        "id": token,
        "object": "token",
        "bank_account": account.to_stripe(),
        "created": account.created,
        "livemode": False,
        "type": "bank_account",
        "used": False,
    }


def create(
    store: Store, params: Params, transit_seconds: float, arrival_seconds: float
) -> dict[str, Any]:
    check_known(params, CREATE_PARAMS)
    amount = get_positive_int(params, "amount", required=True)
    currency = (get_str(params, "currency", required=True) or "").lower()
    assert amount is not None
    account = _destination(store, _required(params, "destination"))
    available = store.available(currency)
    if amount > available:
        raise invalid_request(
            f"You have insufficient funds in your Stripe account for this transfer. Your "
            f"available {currency} balance is {available}.",
            code="balance_insufficient",
        )
    now = store.timestamp()
    payout = Payout(
        id=new_id("po"),
        amount=amount,
        currency=currency,
        destination=account.id,
        created=now,
        in_transit_at=now + round(transit_seconds),
        arrival_date=now + round(max(arrival_seconds, transit_seconds)),
        description=get_str(params, "description"),
        metadata=get_metadata(params),
    )
    txn = store.add_balance_transaction("payout", payout.id, -amount, currency)
    payout.balance_transaction = txn.id
    store.put(payout)
    store.emit("payout.created", payout.to_stripe())
    return payout.to_stripe()


def cancel(store: Store, po_id: str, params: Params) -> dict[str, Any]:
    check_known(params, CANCEL_PARAMS)
    payout = _payout(store, po_id)
    if payout.status != "pending":
        raise invalid_request(
            f"Payouts can only be canceled while they are pending; this one is {payout.status}.",
            code="payout_not_cancelable",
        )
    _return_funds(store, payout)
    payout.status = "canceled"
    store.emit("payout.canceled", payout.to_stripe())
    return payout.to_stripe()


def advance_due(store: Store) -> list[str]:
    """Move payouts whose time has come: to ``in_transit``, then ``paid`` or ``failed``."""
    now = store.now()
    moved: list[str] = []
    for payout in list(store.payouts.values()):
        if payout.status == "pending" and now >= payout.in_transit_at:
            payout.status = "in_transit"
            store.put(payout)
            store.emit("payout.updated", payout.to_stripe())
            moved.append(payout.id)
        if payout.status == "in_transit" and now >= payout.arrival_date:
            _arrive(store, payout)
            moved.append(payout.id)
    return moved


def _arrive(store: Store, payout: Payout) -> None:
    account = store.bank_accounts[payout.destination]
    store.put(payout)
    if account.failure_code is None:
        payout.status = "paid"
        store.emit("payout.paid", payout.to_stripe())
        return
    payout.failure_code = account.failure_code
    payout.failure_message = FAILURE_MESSAGES[account.failure_code]
    _return_funds(store, payout)
    payout.status = "failed"
    store.emit("payout.failed", payout.to_stripe())


def _return_funds(store: Store, payout: Payout) -> None:
    txn = store.add_balance_transaction("payout", payout.id, payout.amount, payout.currency)
    payout.failure_balance_transaction = txn.id
    store.put(payout)


def _destination(store: Store, ident: str) -> BankAccount:
    for account in store.bank_accounts.values():
        if ident in (account.id, account.token):
            return account
    raise invalid_request(
        f"No such external account: '{ident}'", param="destination", code="resource_missing"
    )


def _payout(store: Store, po_id: str) -> Payout:
    found = store.payouts.get(po_id)
    if found is None:
        store.retrieve("po", po_id)  # raises Stripe's resource_missing
    assert found is not None
    store.touched[found.id] = found
    return found


def _bank_field(fields: Params, name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_request(
            f"Missing required param: bank_account[{name}].", param=f"bank_account[{name}]"
        )
    return value


def _required(params: Params, name: str) -> str:
    value = get_str(params, name, required=True)
    assert value is not None
    return value
