"""SSRF guard: address classes (hypothesis over the ranges), URLs resolved by the real
resolver, and a real HTTP server on 127.0.0.1 that answers, redirects and misbehaves."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pocketpay.notifications.targets import (
    MAX_RESPONSE_BYTES,
    IPAddress,
    TargetRefused,
    TargetUnresolved,
    check_target,
    post_guarded,
    refused_class,
)

# Refused even with allow_private.
ALWAYS_REFUSED = [
    "169.254.0.0/16",  # link-local, metadata among them
    "fe80::/10",
    "0.0.0.0/8",
    "224.0.0.0/4",  # multicast
    "ff00::/8",
    "240.0.0.0/4",  # reserved
    "100.64.0.0/10",  # CGNAT
    "192.0.2.0/24",  # documentation
    "198.18.0.0/15",  # benchmarking
    "::/128",
    "2001:db8::/32",
]
# Refused unless allow_private.
PRIVATE_RANGES = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
PRIVATE_RANGES += ["fc00::/7"]
PUBLIC_RANGES = ["8.8.8.0/24", "1.1.1.0/24", "93.184.216.0/24", "2001:4860::/32", "2606:4700::/32"]
METADATA = ["169.254.169.254", "fd00:ec2::254", "100.100.100.200"]


def in_ranges(ranges: list[str]) -> st.SearchStrategy[IPAddress]:
    def pick(net: str) -> st.SearchStrategy[IPAddress]:
        n = ipaddress.ip_network(net)
        return st.integers(0, n.num_addresses - 1).map(lambda i: n[i])

    return st.one_of([pick(r) for r in ranges])


def disguises(addr: IPAddress) -> list[IPAddress]:
    """The address and the IPv6 forms that reach the same IPv4 address."""
    if addr.version == 6:
        return [addr]
    v4 = int(addr)
    return [
        addr,
        ipaddress.IPv6Address((0xFFFF << 32) | v4),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80)),  # 6to4
        ipaddress.IPv6Address((0x64FF9B << 96) | v4),  # NAT64
    ]


@given(in_ranges(ALWAYS_REFUSED), st.booleans())
def test_link_local_metadata_and_special_ranges_are_always_refused(
    addr: IPAddress, allow_private: bool
) -> None:
    for form in disguises(addr):
        assert refused_class(form, allow_private=allow_private) is not None, form


@given(in_ranges(PRIVATE_RANGES))
def test_loopback_and_private_ranges_pass_only_with_allow_private(addr: IPAddress) -> None:
    for form in disguises(addr):
        assert refused_class(form, allow_private=False) is not None, form
        assert refused_class(form, allow_private=True) is None, form


@given(in_ranges(PUBLIC_RANGES), st.booleans())
def test_public_addresses_pass(addr: IPAddress, allow_private: bool) -> None:
    for form in disguises(addr):
        assert refused_class(form, allow_private=allow_private) is None, form


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_nothing_that_is_not_globally_routable_passes(addr: ipaddress.IPv4Address) -> None:
    if refused_class(addr, allow_private=False) is None:
        assert addr.is_global and not addr.is_link_local and not addr.is_multicast


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("ip", METADATA)
def test_metadata_addresses_are_named_as_such(ip: str, allow_private: bool) -> None:
    addr = ipaddress.ip_address(ip)
    assert refused_class(addr, allow_private=allow_private) == "a cloud metadata address"


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/hook",  # a name: resolved, then refused
        "http://127.0.0.1/hook",
        "http://2130706433/hook",  # 127.0.0.1 in decimal, resolved by getaddrinfo
        "http://[::ffff:127.0.0.1]/hook",
        "https://10.1.2.3/hook",
        "http://[::1]:9000/",
    ],
)
async def test_loopback_and_private_urls_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        await check_target(url, allow_private=False)
    assert refused.value.code == "notifications.target_refused"
    assert refused.value.status == 422
    assert "ALLOW_PRIVATE_TARGETS" in refused.value.detail
    await check_target(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "http://0.0.0.0:8000/",
    ],
)
async def test_metadata_and_link_local_urls_stay_refused_with_allow_private(url: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        await check_target(url, allow_private=True)
    assert "refused" in refused.value.detail
    assert "ALLOW_PRIVATE_TARGETS" not in refused.value.detail  # no fix suggested that fails


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "/relative", ""])
async def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(TargetRefused, match="http"):
        await check_target(url, allow_private=True)


async def test_a_host_that_does_not_resolve_is_refused_as_unresolved() -> None:
    with pytest.raises(TargetUnresolved) as refused:
        await check_target("https://no-such-host.invalid/hook", allow_private=False)
    assert refused.value.code == "notifications.target_unresolved"


async def test_every_resolved_address_must_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name with one public and one private address is refused."""

    async def two(host: str, port: int, **_: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", two)
    with pytest.raises(TargetRefused, match=r"10\.0\.0\.5, a private network address"):
        await check_target("https://mixed.example/hook", allow_private=False)


# -- a real HTTP server ------------------------------------------------------------------------


@dataclass
class Seen:
    path: str
    host: str
    body: bytes


@dataclass
class Receiver:
    """Answers per path: (status, headers, body). Records every POST."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            rec.seen.append(Seen(self.path, self.headers.get("host", ""), body))
            status, headers, answer = rec.routes.get(self.path, (200, {}, b"ok"))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()
    thread.join()


async def post(url: str, *, allow_private: bool = True, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False) as client:
        return await post_guarded(
            client,
            url,
            content=b'{"n":1}',
            headers={"content-type": "application/json"},
            allow_private=allow_private,
            timeout_seconds=5,
            **kw,
        )


async def test_posts_to_an_allowed_target(receiver: Receiver) -> None:
    resp = await post(receiver.url("/hook"))
    assert resp.status_code == 200 and resp.text == "ok"
    assert [(s.path, s.body) for s in receiver.seen] == [("/hook", b'{"n":1}')]


async def test_refused_before_any_request_without_allow_private(receiver: Receiver) -> None:
    with pytest.raises(TargetRefused):
        await post(receiver.url("/hook"), allow_private=False)
    assert receiver.seen == []


async def test_a_307_to_a_metadata_address_is_refused(receiver: Receiver) -> None:
    receiver.routes["/hook"] = (307, {"location": "http://169.254.169.254/latest/"}, b"")
    with pytest.raises(TargetRefused, match="cloud metadata"):
        await post(receiver.url("/hook"))
    assert [s.path for s in receiver.seen] == ["/hook"]


async def test_a_308_is_followed_with_the_same_body(receiver: Receiver) -> None:
    receiver.routes["/old"] = (308, {"location": "/new"}, b"")
    resp = await post(receiver.url("/old"))
    assert resp.status_code == 200
    assert [(s.path, s.body) for s in receiver.seen] == [
        ("/old", b'{"n":1}'),
        ("/new", b'{"n":1}'),
    ]


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_redirects_that_drop_the_body_are_returned_not_followed(
    receiver: Receiver, status: int
) -> None:
    receiver.routes["/hook"] = (status, {"location": "/elsewhere"}, b"")
    resp = await post(receiver.url("/hook"))
    assert resp.status_code == status
    assert [s.path for s in receiver.seen] == ["/hook"]


async def test_redirects_stop_after_max_redirects(receiver: Receiver) -> None:
    receiver.routes["/loop"] = (307, {"location": "/loop"}, b"")
    resp = await post(receiver.url("/loop"), max_redirects=2)
    assert resp.status_code == 307
    assert len(receiver.seen) == 3  # the first POST and two redirects


async def test_the_checked_address_is_the_one_connected_to(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name only our resolver knows: the request reaches 127.0.0.1 with the name as Host,
    so httpx did not resolve the name again (no rebinding window)."""

    async def resolver(host: str, port: int, **_: Any) -> list[Any]:
        assert host == "hooks.customer.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", resolver)
    resp = await post(receiver.url("/hook", host="hooks.customer.test"))
    assert resp.status_code == 200
    assert receiver.seen[0].host == f"hooks.customer.test:{receiver.port}"


async def test_answers_are_decoded_and_capped(receiver: Receiver) -> None:
    big = b"x" * (MAX_RESPONSE_BYTES * 3)
    receiver.routes["/big"] = (500, {}, big)
    receiver.routes["/gz"] = (200, {"content-encoding": "gzip"}, gzip.compress(b"hello"))
    resp = await post(receiver.url("/big"))
    assert resp.status_code == 500 and len(resp.content) == MAX_RESPONSE_BYTES
    resp = await post(receiver.url("/gz"))
    assert resp.text == "hello"
