"""requirements.lock pins what the tests passed with; pyproject.toml says what PocketPay needs.
The two must agree: every requirement of pyproject.toml (runtime and the ``dev`` extra) is in
the lock, pinned to a version its specifier accepts. ``make lock`` rewrites the lock."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def read_lock(text: str) -> dict[str, Version]:
    """``name==version`` lines (uv's and pip-compile's format), by canonical name."""
    pins: dict[str, Version] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one clause, and it must be ==
        assert spec.operator == "==", f"{line!r}: the lock pins exact versions"
        name = canonicalize_name(req.name)
        assert name not in pins, f"{name} is pinned twice"
        pins[name] = Version(spec.version)
    return pins


def disagreements(pyproject: str, lock: str) -> list[str]:
    """What in ``pyproject`` the lock does not satisfy, one line each (empty: they agree)."""
    project = tomllib.loads(pyproject)["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = read_lock(lock)
    problems = []
    for line in wanted:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": "dev"}):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name}: in pyproject.toml, missing from requirements.lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req.name}: the lock pins {pinned}, pyproject wants {req.specifier}")
    return problems


def test_lock_satisfies_pyproject() -> None:
    problems = disagreements(
        (ROOT / "pyproject.toml").read_text(), (ROOT / "requirements.lock").read_text()
    )
    assert problems == [], "run `make lock`: " + "; ".join(problems)


def test_lock_names_no_local_index_or_file() -> None:
    # The machine's pip config adds local indexes; the lock must install from the registry.
    text = (ROOT / "requirements.lock").read_text()
    for needle in ("file:", "--index-url", "--extra-index-url", "--find-links", "--hash"):
        assert needle not in text


PYPROJECT = """
[project]
dependencies = ["stripe==16.1.0", "httpx>=0.27", "tomli>=2; python_version < '3.0'"]
[project.optional-dependencies]
dev = ["pytest>=8.2"]
"""


def test_agreeing_files_have_no_disagreement() -> None:
    lock = "httpx==0.28.1\n    # via pocketpay\nstripe==16.1.0\npytest==9.2.0\n"
    assert disagreements(PYPROJECT, lock) == []


def test_a_missing_or_unsatisfying_pin_is_reported() -> None:
    lock = "httpx==0.26.0\nstripe==16.1.0\n"
    assert disagreements(PYPROJECT, lock) == [
        "httpx: the lock pins 0.26.0, pyproject wants >=0.27",
        "pytest: in pyproject.toml, missing from requirements.lock",
    ]


def test_names_compare_canonically() -> None:
    # PyPI names are case- and separator-insensitive: Jinja2 == jinja2, PyJWT == pyjwt.
    pyproject = PYPROJECT.replace("httpx", "Py_JWT")
    lock = "py-jwt==2.15.1\nstripe==16.1.0\npytest==9.2.0\n"
    assert disagreements(pyproject, lock) == []
    assert disagreements(pyproject, lock.replace("py-jwt", "jwt")) == [
        "Py_JWT: in pyproject.toml, missing from requirements.lock"
    ]


def test_a_loose_pin_is_refused() -> None:
    with pytest.raises(AssertionError, match="exact versions"):
        read_lock("httpx>=0.27\n")
