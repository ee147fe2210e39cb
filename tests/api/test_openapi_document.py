"""The public OpenAPI document: typed answers, documented problems, required headers, the
security scheme, and nothing internal in it."""

from __future__ import annotations

from typing import Any

import pytest

from pocketpay.kit.component import health_paths, route_paths
from pocketpay.runtime import EMBEDDED, Runtime
from pocketpay.settings import Settings

MOVES_MONEY = {
    ("post", "/api/v1/payments"),
    ("post", "/api/v1/payments/{payment_id}/capture"),
    ("post", "/api/v1/payments/{payment_id}/cancel"),
    ("post", "/api/v1/payments/{payment_id}/refunds"),
    ("post", "/api/v1/transfers"),
}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    root = tmp_path_factory.mktemp("doc")
    settings = Settings(
        var_dir=root, database_url=f"sqlite+aiosqlite:///{root}/x.db", auth={"jwt_secret": "x" * 40}
    )
    return Runtime(settings, EMBEDDED)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/api-keys")
        for method, op in item.items()
    ]


def test_every_operation_answers_a_model_and_documents_its_problems(runtime: Runtime) -> None:
    doc = runtime.app.openapi()
    schemas = doc["components"]["schemas"]
    assert set(schemas["ProblemDetail"]["required"]) >= {
        "type",
        "title",
        "status",
        "detail",
        "code",
    }
    ops = operations(doc)
    assert len(ops) >= 23, [f"{m} {p}" for m, p, _ in ops]
    for method, path, op in ops:
        where = f"{method.upper()} {path}"
        ok = [s for s in op["responses"] if s.startswith("2")]
        assert len(ok) == 1, where
        content = op["responses"][ok[0]]["content"]
        if path.endswith("/pdf"):  # a document, not a model
            assert set(content) == {"application/pdf"}, where
        else:
            body = content["application/json"]["schema"]
            assert "$ref" in body, (where, body)  # a named model, not {} or a bare dict
            model = schemas[body["$ref"].rsplit("/", 1)[1]]
            assert model.get("properties"), (where, model)
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        for status, response in errors.items():
            assert set(response["content"]) == {"application/problem+json"}, (where, status)
            assert "`" in response["description"], (where, status)  # the codes are listed
        if "bearerAuth" in str(op.get("security")):
            assert "401" in errors and "`auth.unauthorized`" in errors["401"]["description"]
        headers = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "header"}
        if (method, path) in MOVES_MONEY:
            assert headers["Idempotency-Key"]["required"] is True, where
            assert "`idempotency.key_missing`" in errors["400"]["description"], where
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "pp_sk_" in doc["components"]["securitySchemes"]["bearerAuth"]["description"]
    # Examples on the main objects and bodies.
    for name in ("Payment", "Refund", "Transfer", "WalletBalance", "ProblemDetail"):
        assert schemas[name].get("examples"), name


def test_no_internal_or_sandbox_route_is_in_the_document(runtime: Runtime) -> None:
    doc = runtime.app.openapi()
    public = set(doc["paths"])
    assert all(
        p.startswith(("/api/v1/", "/health")) or p in ("/healthz", "/readyz") for p in public
    )
    for name in ("payments", "ledger"):
        app = runtime.components[name].app
        internal = set(route_paths(app)) - set(health_paths(app)) - {"/metrics"}
        assert len(internal) >= 5, name
        # The internal API's paths, as served and as they would be if mounted.
        for path in internal:
            assert not {path, f"/components/{name}{path}"} & public, path
    assert not [p for p in public if p.startswith(("/sandbox", "/components", "/internal"))]
    assert "/api/v1/payments/{payment_id}/refunds" in public
