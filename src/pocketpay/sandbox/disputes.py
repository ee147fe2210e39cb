"""Disputes (chargebacks) and inquiries, as Stripe's test mode plays them.

A dispute opens when a charge made with ``pm_card_createDispute`` is captured (an inquiry,
which moves no money, with ``pm_card_createDisputeInquiry``), or on any captured charge
through the ops route ``POST /_sandbox/disputes``. Opening one withdraws the disputed amount
and the dispute fee from the balance (``charge.dispute.funds_withdrawn``).

The merchant answers with ``POST /v1/disputes/{id}`` (``evidence[...]``, ``submit``, default
true) or accepts the loss with ``POST /v1/disputes/{id}/close``. The sandbox decides a
submitted dispute on its next tick after ``dispute_decision_seconds``, by Stripe's test-mode
rule: evidence whose ``uncategorized_text`` contains ``winning_evidence`` wins (the amount,
not the fee, comes back: ``charge.dispute.funds_reinstated``); any other evidence loses. A
dispute still waiting for evidence when ``evidence_details.due_by`` passes is lost.
"""

from __future__ import annotations

from typing import Any

from pocketpay.sandbox.errors import invalid_request
from pocketpay.sandbox.forms import Params, check_known, get_bool, update_metadata
from pocketpay.sandbox.models import Charge, Dispute, DisputeStatus, new_id
from pocketpay.sandbox.state import Store

# Stripe's dispute fee in the US (15.00 in the charge's currency's minor units).
DISPUTE_FEE = 1500
EVIDENCE_WINDOW_SECONDS = 7 * 24 * 3600
WINNING_TEXT = "winning_evidence"
# The evidence fields the sandbox keeps (a subset of Stripe's; all are free text here).
EVIDENCE_FIELDS = frozenset(
    {
        "access_activity_log",
        "billing_address",
        "cancellation_policy_disclosure",
        "cancellation_rebuttal",
        "customer_communication",
        "customer_email_address",
        "customer_name",
        "customer_purchase_ip",
        "duplicate_charge_explanation",
        "product_description",
        "refund_policy_disclosure",
        "refund_refusal_explanation",
        "service_date",
        "shipping_tracking_number",
        "uncategorized_text",
    }
)
UPDATE_PARAMS = frozenset({"evidence", "metadata", "submit", "expand"})
CLOSE_PARAMS = frozenset({"expand"})


def open_for_charge(
    store: Store, charge: Charge, *, reason: str = "fraudulent", inquiry: bool = False
) -> Dispute:
    """Open the one dispute a captured charge may have, for its whole captured amount."""
    if not charge.captured:
        raise invalid_request(f"Charge {charge.id} has not been captured.", param="charge")
    if charge.disputed:
        raise invalid_request(f"Charge {charge.id} is already disputed.", code="charge_disputed")
    status: DisputeStatus = "warning_needs_response" if inquiry else "needs_response"
    now = store.timestamp()
    dispute = Dispute(
        id=new_id("dp"),
        amount=charge.amount_captured,
        currency=charge.currency,
        charge=charge.id,
        payment_intent=charge.payment_intent,
        created=now,
        status=status,
        reason=reason,
        due_by=now + EVIDENCE_WINDOW_SECONDS,
    )
    charge.disputed = True
    store.touched[charge.id] = charge
    store.put(dispute)
    store.emit("charge.dispute.created", dispute.to_stripe())
    if not inquiry:
        _move_funds(store, dispute, -dispute.amount, DISPUTE_FEE)
        store.emit("charge.dispute.funds_withdrawn", dispute.to_stripe())
    return dispute


def update(store: Store, dp_id: str, params: Params) -> dict[str, Any]:
    check_known(params, UPDATE_PARAMS)
    dispute = _dispute(store, dp_id)
    if dispute.status not in ("needs_response", "warning_needs_response"):
        raise invalid_request(
            f"This dispute is {dispute.status}: evidence can only be changed while it needs a "
            "response.",
            code="dispute_not_updatable",
        )
    dispute.evidence.update(_evidence(params))
    dispute.metadata = update_metadata(dispute.metadata, params)
    submit = "submit" not in params or get_bool(params, "submit")
    if submit:
        dispute.submission_count += 1
        dispute.submitted_at = store.timestamp()
        dispute.status = "warning_under_review" if dispute.is_inquiry else "under_review"
    store.put(dispute)
    store.emit("charge.dispute.updated", dispute.to_stripe())
    return dispute.to_stripe()


def close(store: Store, dp_id: str, params: Params) -> dict[str, Any]:
    """Accept the dispute: the merchant gives up, the customer keeps the money."""
    check_known(params, CLOSE_PARAMS)
    dispute = _dispute(store, dp_id)
    if dispute.closed:
        raise invalid_request(f"This dispute is already {dispute.status}.", code="dispute_closed")
    _finish(store, dispute, won=False)
    return dispute.to_stripe()


def decide_due(store: Store, decision_seconds: float) -> list[str]:
    """Close what is due: submitted disputes after ``decision_seconds``, unanswered ones
    past their deadline. The ids of the disputes closed."""
    now = store.now()
    closed: list[str] = []
    for dispute in list(store.disputes.values()):
        submitted = dispute.status in ("under_review", "warning_under_review")
        if submitted and dispute.submitted_at is not None:
            if now >= dispute.submitted_at + decision_seconds:
                text = dispute.evidence.get("uncategorized_text", "")
                _finish(store, dispute, won=WINNING_TEXT in text)
                closed.append(dispute.id)
        elif not dispute.closed and now >= dispute.due_by:
            _finish(store, dispute, won=False)
            closed.append(dispute.id)
    return closed


def _finish(store: Store, dispute: Dispute, *, won: bool) -> None:
    if dispute.is_inquiry:
        dispute.status = "warning_closed"
    else:
        dispute.status = "won" if won else "lost"
    store.put(dispute)
    if won and not dispute.is_inquiry:
        _move_funds(store, dispute, dispute.amount, 0)
        store.emit("charge.dispute.funds_reinstated", dispute.to_stripe())
    store.emit("charge.dispute.closed", dispute.to_stripe())


def _move_funds(store: Store, dispute: Dispute, amount: int, fee: int) -> None:
    txn = store.add_balance_transaction("adjustment", dispute.id, amount, dispute.currency, fee)
    dispute.balance_transactions.append(txn.id)


def _dispute(store: Store, dp_id: str) -> Dispute:
    found = store.disputes.get(dp_id)
    if found is None:
        store.retrieve("dp", dp_id)  # raises Stripe's resource_missing
    assert found is not None
    store.touched[found.id] = found
    return found


def _evidence(params: Params) -> dict[str, str]:
    raw = params.get("evidence")
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict):
        raise invalid_request("Invalid evidence: must be a hash", param="evidence")
    out: dict[str, str] = {}
    for name, value in raw.items():
        if name not in EVIDENCE_FIELDS:
            raise invalid_request(
                f"Received unknown parameter: evidence[{name}]", param=f"evidence[{name}]"
            )
        if not isinstance(value, str) or len(value) > 20_000:
            raise invalid_request(
                f"Invalid evidence[{name}]: a string of at most 20000 characters",
                param=f"evidence[{name}]",
            )
        out[str(name)] = value
    return out
