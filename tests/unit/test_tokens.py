"""Access tokens: a verified token's verdict is reused until its ``exp`` and never after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from pocketpay.kit import tokens
from pocketpay.kit.errors import Unauthorized
from pocketpay.kit.tokens import Principal, TokenCodec

SECRET = "s" * 40


def _codec() -> TokenCodec:
    return TokenCodec(SECRET, issuer="pocketpay", audience="pocketpay-api", ttl_seconds=900)


def test_a_verified_token_is_not_decoded_again_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = _codec()
    alice = Principal("usr_1", "user", "a@example.com")
    token = codec.issue(alice, datetime.now(UTC))
    decoded: list[str] = []
    real = jwt.decode

    def counting(t: str, *args: Any, **kw: Any) -> Any:
        decoded.append(t)
        return real(t, *args, **kw)

    monkeypatch.setattr(tokens.jwt, "decode", counting)
    assert codec.verify(token) == alice
    assert codec.verify(token) == alice
    assert decoded == [token]  # the second answer came from the verified tokens

    # Past its exp the kept verdict is dropped: the token goes through the full check again
    # (here PyJWT's, told the token expired), and is refused.
    exp = int(real(token, options={"verify_signature": False})["exp"])
    monkeypatch.setattr(tokens.time, "time", lambda: float(exp))

    def expired(*_: Any, **__: Any) -> Any:
        raise jwt.ExpiredSignatureError("expired")

    monkeypatch.setattr(tokens.jwt, "decode", expired)
    with pytest.raises(Unauthorized) as refused:
        codec.verify(token)
    assert refused.value.code == "auth.token_expired"


def test_refused_tokens_are_never_kept_and_the_store_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    codec = _codec()
    old = codec.issue(Principal("usr_1", "user"), datetime.now(UTC) - timedelta(hours=1))
    for _ in range(2):
        with pytest.raises(Unauthorized) as refused:
            codec.verify(old)
        assert refused.value.code == "auth.token_expired"
    forged = jwt.encode({"sub": "usr_2", "typ": "access"}, "x" * 40, algorithm="HS256")
    with pytest.raises(Unauthorized):
        codec.verify(forged)
    assert codec._verified == {}

    monkeypatch.setattr(tokens, "VERIFIED_MAX", 3)
    now = datetime.now(UTC)
    issued = [codec.issue(Principal(f"usr_{i}", "user"), now) for i in range(5)]
    for t in issued:
        codec.verify(t)
    assert list(codec._verified) == issued[2:]  # the oldest went first
