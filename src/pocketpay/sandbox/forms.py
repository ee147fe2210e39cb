"""Stripe's form encoding: ``metadata[order]=x``, ``expand[0]=latest_charge``, ``a[b][c]=1``.

Requests arrive as ``application/x-www-form-urlencoded`` (bodies) or query strings; both are
decoded into nested dicts and lists here, and the typed readers below turn raw strings into the
values an endpoint expects, raising Stripe-shaped ``invalid_request_error`` on bad input.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from pocketpay.sandbox.errors import invalid_request

Params = dict[str, Any]

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
# Keys whose sub-keys are free-form strings: never turned into lists.
_FREE_FORM = {"metadata"}


def parse_form(raw: str) -> Params:
    """Decode a Stripe form body or query string into nested dicts (and lists)."""
    root: Params = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise invalid_request(f"Invalid parameter name: {key}", param=key)
        path = [match.group(1), *_PART.findall(match.group(2))]
        _assign(root, path, value)
    return {k: _listify(v, k) for k, v in root.items()}


def _assign(root: Params, path: list[str], value: str) -> None:
    node = root
    for part in path[:-1]:
        key = part or str(len(node))  # ``a[][b]``: a new element
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1] or str(len(node))] = value  # ``a[]=x`` appends


def _listify(value: Any, key: str | None) -> Any:
    if not isinstance(value, dict):
        return value
    out = {k: _listify(v, k) for k, v in value.items()}
    if key not in _FREE_FORM and out and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def fingerprint(method: str, path: str, params: Params) -> str:
    """A stable digest of a request, to tell a replay from a reused idempotency key."""
    blob = json.dumps([method.upper(), path, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def check_known(params: Params, allowed: frozenset[str]) -> None:
    """Reject unknown top-level parameters as Stripe does."""
    for name in params:
        if name not in allowed:
            raise invalid_request(f"Received unknown parameter: {name}", param=name)


def get_str(params: Params, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise invalid_request(f"Missing required param: {name}.", param=name)
        return None
    if not isinstance(value, str):
        raise invalid_request(f"Invalid string: {name}", param=name)
    return value


def get_int(params: Params, name: str, *, required: bool = False) -> int | None:
    raw = get_str(params, name, required=required)
    if raw is None:
        return None
    if not raw.lstrip("-").isdigit():
        raise invalid_request(f"Invalid integer: {raw}", param=name)
    return int(raw)


def get_positive_int(params: Params, name: str, *, required: bool = False) -> int | None:
    value = get_int(params, name, required=required)
    if value is not None and value < 1:
        raise invalid_request(f"This value must be greater than or equal to 1: {name}", param=name)
    return value


def get_bool(params: Params, name: str) -> bool:
    raw = get_str(params, name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise invalid_request(f"Invalid boolean: {raw}", param=name)
    return raw == "true"


def get_choice(params: Params, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = get_str(params, name) or default
    if raw not in choices:
        allowed = ", ".join(f"`{c}`" for c in choices)
        raise invalid_request(f"Invalid {name}: must be one of {allowed}", param=name)
    return raw


def _metadata_hash(params: Params) -> dict[str, str]:
    """The ``metadata`` sent, empty values kept (they unset keys on update)."""
    value = params.get("metadata")
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid_request("Invalid metadata: must be a hash of strings", param="metadata")
    return {str(k): str(v) for k, v in value.items()}


def get_metadata(params: Params) -> dict[str, str]:
    return {k: v for k, v in _metadata_hash(params).items() if v != ""}


def update_metadata(current: dict[str, str], params: Params) -> dict[str, str]:
    """Stripe's update: sent keys are set, a key sent empty is removed, ``metadata=""``
    removes them all."""
    if params.get("metadata") == "":
        return {}
    merged = {**current, **_metadata_hash(params)}
    return {k: v for k, v in merged.items() if v != ""}


def get_expand(params: Params) -> list[str]:
    value = params.get("expand")
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_request("Invalid array: expand", param="expand")
    return list(value)
