"""Outbound HTTP to merchants' servers: to the public internet only, and only to the
address that was checked.

A webhook URL is the merchant's to choose, so it is untrusted: it could name the cloud's
metadata service, a private network, or the platform itself. `EgressPolicy.check`
resolves the host once and judges every address it resolves to; `post` then connects to
one of exactly those addresses (no second lookup that DNS could answer differently),
keeps the host name for the Host header, SNI and certificate verification, and never
follows a redirect.

Standard library only: `ipaddress` judges addresses, `http.client` and `ssl` connect.
"""

from __future__ import annotations

import functools
import http.client
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from clearline.config import Settings

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str, int], list[IPAddress]]

_CGNAT = ip_network("100.64.0.0/10")  # shared address space: not private, not global
_UNIQUE_LOCAL = ip_network("fc00::/7")
_NAT64_WELL_KNOWN = ip_network("64:ff9b::/96")
_NAT64_LOCAL_USE = ip_network("64:ff9b:1::/48")
_SIX_TO_FOUR = ip_network("2002::/16")
# Named in refusals, so that whoever reads one knows what was at stake.
_WELL_KNOWN_TARGETS = {
    ip_address("169.254.169.254"): "the instance metadata service",
    ip_address("fd00:ec2::254"): "the instance metadata service",
    ip_address("169.254.170.2"): "the container credentials endpoint",
}
_MAX_ERROR_LENGTH = 300


class Refused(Exception):
    """The URL is no place to send a webhook; `message` says why, for the merchant."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unresolvable(Refused):
    """The host has no address (yet): nothing can be judged, nothing can be sent."""


def _judge(address: IPAddress, *, loopback_ok: bool) -> str | None:
    """Why a plain (not embedded) address is not public, or None when it is."""
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return None if loopback_ok else "a loopback address"
    if address in _WELL_KNOWN_TARGETS:
        return f"a link-local address ({_WELL_KNOWN_TARGETS[address]})"
    if address.is_link_local:
        return "a link-local address"
    if address.version == 4 and address in _CGNAT:
        return "in the carrier-grade NAT shared address space (100.64.0.0/10)"
    if address.is_multicast:
        return "a multicast address"
    if address.version == 6 and address in _UNIQUE_LOCAL:
        return "a unique local address (fc00::/7)"
    if isinstance(address, IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not globally routable"
    return None


def _embedded(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 address leads to, with the name of the form."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN or address in _NAT64_LOCAL_USE:
        # The last 32 bits, as a /96 prefix places them (RFC 6052). Within the local-use
        # /48 an operator may place them elsewhere, so that prefix is refused whatever
        # this decodes to: it is never globally reachable anyway (RFC 8215).
        return "NAT64", IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR and address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address.teredo is not None:
        return "Teredo", address.teredo[1]
    return None


def _reason(address: IPAddress, *, loopback_ok: bool) -> str | None:
    if isinstance(address, IPv6Address):
        embedded = _embedded(address)
        if embedded is not None:
            form, ipv4 = embedded
            why = _judge(ipv4, loopback_ok=False)
            if address in _NAT64_LOCAL_USE and (why is None or ipv4.is_unspecified):
                return "in the local-use NAT64 prefix 64:ff9b:1::/48, not globally reachable"
            if why is not None:
                return f"the {form} form of {ipv4}, {why}"
            if form in ("IPv4-mapped", "NAT64"):
                # They lead to a public IPv4 address; the IPv6 prefix itself is "reserved".
                return None
    return _judge(address, loopback_ok=loopback_ok)


def refusal(address: IPAddress, *, loopback_ok: bool = False) -> str | None:
    """Why `address` is no place to send a webhook ("<address> is <reason>"), or None when
    it is on the public internet. IPv6 forms that carry an IPv4 address (mapped, NAT64,
    6to4, Teredo) are judged by the IPv4 address they lead to, and never count as
    loopback."""
    why = _reason(address, loopback_ok=loopback_ok)
    return None if why is None else f"{address} is {why}"


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself), in the resolver's order."""
    try:
        return [ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"Cannot resolve {host}.") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        address = ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(f"Cannot resolve {host}.")
    return addresses


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect (`addresses`, every one judged) and what to ask."""

    url: str
    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent in the request line
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class EgressPolicy:
    """Where webhooks may go. The default is the deployed rule: public addresses only.

    `loopback_for_test_mode` is the local stack's allowance: test-mode endpoints may then
    be on loopback (and use plain http there), except on `refused_loopback_ports`, where
    the stack's own services listen. Live mode always gets the strict rule: https, public
    addresses only."""

    loopback_for_test_mode: bool = False
    refused_loopback_ports: frozenset[int] = frozenset()
    resolver: Resolver = field(default=resolve_host, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        refused = settings.webhook_loopback_refused_ports
        return cls(
            loopback_for_test_mode=refused is not None,
            refused_loopback_ports=refused or frozenset(),
        )

    def check(self, url: str, *, livemode: bool) -> Destination:
        """The destination of `url`, resolved once and judged, or Refused."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise Refused("Invalid URL: it must be an absolute http(s) URL.") from exc
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            raise Refused("Invalid URL: it must be an absolute http(s) URL.")
        if livemode and parts.scheme != "https":
            raise Refused("Live-mode webhook URLs must use https.")
        port = port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [ip_address(host)]  # a literal is its own answer: no lookup
        except ValueError:
            addresses = self.resolver(host, port)
        if not addresses:
            raise Unresolvable(f"Cannot resolve {host}.")
        loopback_ok = self.loopback_for_test_mode and not livemode
        for address in addresses:
            why = _reason(address, loopback_ok=loopback_ok)
            if why is not None:
                where = (
                    f"{address} is" if host == str(address) else f"{host} resolves to {address},"
                )
                raise Refused(f"Webhook URLs must point at the public internet: {where} {why}.")
            if address.is_loopback and port in self.refused_loopback_ports:
                raise Refused(
                    f"Webhook URLs must not point at port {port} on loopback, where the "
                    "stack's own services listen."
                )
        if parts.scheme == "http" and not all(a.is_loopback for a in addresses):
            raise Refused(
                "Webhook URLs must use https (plain http is allowed only to loopback, in "
                "test mode on the local stack)."
            )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Destination(url, parts.scheme, host, port, target, tuple(addresses))


# ---- the pinned connection ------------------------------------------------------------------


def _connect(address: IPAddress, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to exactly this address: a numeric connect, nothing to resolve."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to one checked address, whatever the host name would resolve to now."""

    def __init__(self, host: str, port: int, *, address: IPAddress, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = _connect(self._address, self.port, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """The same over TLS: SNI and certificate verification are for the host name."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        address: IPAddress,
        timeout: float,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._pinned_context = context

    def connect(self) -> None:
        sock = _connect(self._address, self.port, self.timeout)
        try:
            self.sock = self._pinned_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


# How much of an answer's body is kept, for support to read beside its status.
RESPONSE_EXCERPT_BYTES = 1024


@dataclass(frozen=True)
class Reply:
    status: int | None  # None: no HTTP answer (refused, unreachable, timed out, bad TLS)
    error: str | None
    body: str = ""  # the start of the answer's body (RESPONSE_EXCERPT_BYTES at most)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_LENGTH]


def post(
    destination: Destination,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> Reply:
    """POST `body` to the destination's checked addresses, trying each in turn until one
    connects, all within `timeout`. A redirect is an answer like any other: never
    followed, so a 3xx is a failed delivery with its status."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    for address in destination.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        connection: http.client.HTTPConnection
        if destination.scheme == "https":
            connection = _PinnedHTTPSConnection(
                destination.host,
                destination.port,
                address=address,
                timeout=remaining,
                context=context or default_tls_context(),
            )
        else:
            connection = _PinnedHTTPConnection(
                destination.host, destination.port, address=address, timeout=remaining
            )
        try:
            connection.connect()
            connection.request("POST", destination.target, body=body, headers=headers)
            response = connection.getresponse()
            status = response.status
            try:  # only the start, and within the time left: an endless body is not waited on
                excerpt = response.read(RESPONSE_EXCERPT_BYTES).decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                excerpt = ""
        except ssl.SSLError as exc:  # the certificate is wrong for every address alike
            return Reply(None, _describe(exc))
        except (OSError, http.client.HTTPException) as exc:
            if connection.sock is not None:  # connected, then failed: the answer is lost
                return Reply(None, _describe(exc))
            last_error = exc
            continue
        finally:
            connection.close()
        if 200 <= status < 300:
            return Reply(status, None, excerpt)
        if 300 <= status < 400:
            return Reply(status, f"HTTP {status}: redirects are not followed", excerpt)
        return Reply(status, f"HTTP {status}", excerpt)
    return Reply(None, _describe(last_error) if last_error else "TimeoutError: timed out")


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """The system's trust store, host name checks on; built once, on the first https POST."""
    return ssl.create_default_context()
