"""Stripe form decoding and parameter readers."""

from __future__ import annotations

import pytest

from pocketpay.sandbox.errors import StripeError
from pocketpay.sandbox.forms import fingerprint, get_bool, get_expand, get_int, parse_form


def test_nested_keys_and_lists() -> None:
    params = parse_form(
        "amount=100&metadata[order]=42&metadata[0]=zero&expand[0]=a&expand[1]=b.c&x[y][z]=1"
    )
    assert params == {
        "amount": "100",
        "metadata": {"order": "42", "0": "zero"},
        "expand": ["a", "b.c"],
        "x": {"y": {"z": "1"}},
    }
    assert parse_form("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert get_expand(parse_form("expand=a")) == ["a"]


def test_readers_raise_stripe_errors() -> None:
    with pytest.raises(StripeError) as err:
        get_int({"amount": "12x"}, "amount")
    assert (err.value.status, err.value.param) == (400, "amount")
    with pytest.raises(StripeError):
        get_bool({"confirm": "yes"}, "confirm")
    with pytest.raises(StripeError):
        parse_form("bad]key=1")


def test_fingerprint_ignores_parameter_order() -> None:
    a = fingerprint("post", "/v1/x", parse_form("a=1&b=2"))
    assert a == fingerprint("POST", "/v1/x", parse_form("b=2&a=1"))
    assert a != fingerprint("POST", "/v1/x", parse_form("a=1&b=3"))
