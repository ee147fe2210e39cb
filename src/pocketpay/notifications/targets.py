"""Outgoing HTTP to user-chosen URLs (webhook endpoints, Slack) without SSRF.

A user names the URL, so a careless or hostile one could make PocketPay call its own
loopback services, the private network it runs in, or the cloud metadata service that hands
out credentials. ``check_target`` resolves the host and refuses the URL if ANY address it
resolves to is not public; ``post_guarded`` checks before the first request and again before
every redirect it follows.

Decisions:

- ``http`` and ``https`` are both accepted: webhook bodies are signed (Standard Webhooks), so
  integrity does not depend on TLS, and some receivers sit behind plain HTTP. Other schemes
  are refused.
- ``allow_private`` (``POCKETPAY_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS``, for tests and local
  development) lets exactly loopback and private ranges (RFC 1918, fc00::/7) through.
  Link-local, cloud metadata, CGNAT, multicast, unspecified, reserved and every other
  not-globally-routable range stay refused.
- DNS rebinding: a name could resolve to a public address when checked and to 127.0.0.1 when
  connected. ``post_guarded`` closes that window by connecting to the very address it checked
  (the URL's host replaced by the address, with the original name kept in ``Host`` and as the
  TLS server name, so certificates are still verified against the name). A client configured
  with a proxy would resolve on its own: the client passed in must not use one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from pocketpay.kit.errors import AppError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services: AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba Cloud.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
# The private ranges allow_private lets through. ``is_private`` is wider than this (it also
# covers documentation, benchmarking and other special-purpose ranges), so it is not used.
PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

# A receiver's answer is kept for the delivery log; more than this is not read at all, so a
# hostile receiver cannot make us buffer gigabytes.
MAX_RESPONSE_BYTES = 64 * 1024
FOLLOWED = (307, 308)  # redirects that keep the method and the body
_DECODED_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


class TargetRefused(AppError):
    code = "notifications.target_refused"
    status = 422
    title = "Target refused"


class TargetUnresolved(TargetRefused):
    """The host has no address (yet): refused now, may work later."""

    code = "notifications.target_unresolved"
    title = "Target host not found"


def refused_class(addr: IPAddress, *, allow_private: bool) -> str | None:
    """The class of ``addr`` that makes it refused, or None when it may be called."""
    embedded = _embedded_ipv4(addr)
    if embedded is not None:
        return refused_class(embedded, allow_private=allow_private)
    if addr in METADATA:
        return "a cloud metadata address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_loopback:
        return None if allow_private else "a loopback address"
    if any(addr in net for net in PRIVATE):
        return None if allow_private else "a private network address"
    if addr.is_unspecified or addr.is_multicast or addr.is_reserved:
        return "an unspecified, multicast or reserved address"
    if addr.version == 4 and addr in CGNAT:
        return "a carrier-grade NAT address"
    if not addr.is_global:
        return "a special-purpose address that is not publicly routable"
    return None


def _embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries and reaches: mapped, 6to4 or NAT64."""
    if addr.version == 4:
        return None
    assert isinstance(addr, ipaddress.IPv6Address)
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


async def check_target(url: str, *, allow_private: bool) -> None:
    """Raise ``TargetRefused`` unless every address ``url``'s host resolves to is public."""
    await _resolve_checked(_parse(url), allow_private=allow_private)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise TargetRefused(f"{url!r} is not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TargetRefused(
            f"{url!r} is not an http(s) URL with a host: use https://host/path.",
        )
    return parsed


async def _resolve_checked(url: httpx.URL, *, allow_private: bool) -> list[IPAddress]:
    """The host's addresses, all checked; raises on the first refused one."""
    addresses = await _resolve(url)
    for addr in addresses:
        why = refused_class(addr, allow_private=allow_private)
        if why is not None:
            fix = (
                "Use a public address."
                if allow_private or why not in ("a loopback address", "a private network address")
                else "Use a public address (private ones are allowed only when "
                "POCKETPAY_NOTIFICATIONS__ALLOW_PRIVATE_TARGETS is set, for tests)."
            )
            raise TargetRefused(f"{url.host} resolves to {addr}, {why}: refused. {fix}")
    return addresses


async def _resolve(url: httpx.URL) -> list[IPAddress]:
    host = url.raw_host.decode("ascii")  # IDNA-encoded, as DNS wants it
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    port = url.port or (443 if url.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolved(f"{host} could not be resolved ({exc}): check the URL.") from exc
    # sockaddr[0] is the address; an IPv6 one may carry a %scope, which ip_address accepts.
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise TargetUnresolved(f"{host} has no address: check the URL.")
    return addresses


async def post_guarded(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    allow_private: bool,
    timeout_seconds: float,
    max_redirects: int = 3,
) -> httpx.Response:
    """POST ``content`` to ``url`` after checking it, following at most ``max_redirects``
    307/308 redirects, each checked again.

    301, 302 and 303 are returned, not followed: clients turn them into a GET without the
    body, which is no delivery of a webhook; the receiver should fix its URL. With more
    redirects than allowed, the last redirect answer is returned. Either way the caller sees a
    non-2xx answer, a failed attempt. The answer's body is cut at ``MAX_RESPONSE_BYTES``.
    Raises ``TargetRefused`` for a refused target, httpx errors for transport failures.
    """
    target = _parse(url)
    for _hop in range(max_redirects + 1):
        response = await _post_pinned(
            client, target, content, headers, allow_private, timeout_seconds
        )
        location = response.headers.get("location")
        if response.status_code not in FOLLOWED or not location:
            return response
        target = _parse(str(target.join(location)))
    return response


async def _post_pinned(
    client: httpx.AsyncClient,
    url: httpx.URL,
    content: bytes,
    headers: dict[str, str],
    allow_private: bool,
    timeout_seconds: float,
) -> httpx.Response:
    """One POST to the address that was checked (no second resolution: no rebinding). The
    timeout bounds the whole attempt, so a receiver dripping its answer cannot hold it."""
    try:
        async with asyncio.timeout(timeout_seconds):
            addresses = await _resolve_checked(url, allow_private=allow_private)
            request = client.build_request(
                "POST",
                url.copy_with(host=str(addresses[0])),
                content=content,
                headers={**headers, "Host": url.netloc.decode("ascii")},
                timeout=timeout_seconds,
                extensions={"sni_hostname": url.raw_host.decode("ascii")},
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                body = await _read_capped(response)
            finally:
                await response.aclose()
    except TimeoutError as exc:
        raise httpx.TimeoutException(f"{url.host} did not answer in {timeout_seconds:g}s") from exc
    # The body was decoded already: the copy must not claim an encoding or the full length.
    kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DECODED_HEADERS]
    return httpx.Response(response.status_code, headers=kept, content=body, request=request)


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk[: MAX_RESPONSE_BYTES - len(body)]
        if len(body) >= MAX_RESPONSE_BYTES:
            break
    return bytes(body)
