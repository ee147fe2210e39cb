"""``metadata``: the caller's own key-value pairs on an object, Stripe's limits (at most 50
keys, keys up to 40 characters, values up to 500, strings only)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

MAX_KEYS = 50
MAX_KEY_CHARS = 40
MAX_VALUE_CHARS = 500


def _check(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_KEYS:
        raise ValueError(f"metadata has {len(value)} keys; at most {MAX_KEYS} are allowed")
    for k, v in value.items():
        if not 0 < len(k) <= MAX_KEY_CHARS:
            raise ValueError(f"metadata key {k[:50]!r} must be 1-{MAX_KEY_CHARS} characters")
        if len(v) > MAX_VALUE_CHARS:
            raise ValueError(f"metadata[{k!r}] is longer than {MAX_VALUE_CHARS} characters")
        if "\x00" in k or "\x00" in v:
            raise ValueError(f"metadata[{k[:50]!r}] contains a NUL character")
    return value


Metadata = Annotated[
    dict[str, str],
    AfterValidator(_check),
    Field(
        description=f"Your key-value pairs (strings): at most {MAX_KEYS} keys of up to "
        f"{MAX_KEY_CHARS} characters, values up to {MAX_VALUE_CHARS}.",
        examples=[{"order_id": "6735"}],
    ),
]
