"""Where a webhook may be sent: public addresses only, checked at creation and again at delivery.

A client names the URL, so a delivery is a request this server makes on the client's behalf
(SSRF). The host is resolved here, every address it resolves to must be public, and the request
then goes to the address that was checked (with the name kept for `Host` and TLS), so a DNS
answer that changes between the check and the connection (rebinding) cannot reach inside.
The operator may allow private targets (`FT_WEBHOOKS_ALLOW_PRIVATE=1`, for a receiver on the
same machine or network).

The address policy is an explicit allow-list (IPv6 global unicast) and block-list (IANA's
special-purpose registries), not Python's `is_global` alone, whose answers changed between
patch releases.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import httpx

MAX_URL_LENGTH = 2048
DNS_TIMEOUT_SECONDS = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IANA IPv4 special-purpose registry, plus multicast and the reserved rest.
_IPV4_BLOCKED = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_IPV6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Inside 2000::/3, the blocks that are not ordinary public hosts (IANA IPv6 special-purpose).
_IPV6_BLOCKED = tuple(
    ipaddress.IPv6Network(n)
    for n in ("2001::/23", "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16")
)
# IPv6 forms that carry an IPv4 address in their last 32 bits: IPv4-compatible (::a.b.c.d),
# IPv4-mapped, IPv4-translated, NAT64 (RFC 6052 and 8215).
_IPV4_EMBEDDING = tuple(
    ipaddress.IPv6Network(n)
    for n in ("::/96", "::ffff:0:0/96", "::ffff:0:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48")
)


class UnsafeTarget(ValueError):
    """The URL may not receive webhooks (scheme, form, or an address that is not public)."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: httpx.URL
    address: IPAddress
    # What the request needs to reach `address` while speaking to `url`'s host.
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address."""
        return self.url.copy_with(host=str(self.address))


def is_public(address: IPAddress) -> bool:
    """Tell whether `address` is a public unicast address (IPv4 inside IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv4Address):
        return not any(address in network for network in _IPV4_BLOCKED)
    if any(address in network for network in _IPV4_EMBEDDING):
        return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        return is_public(address.sixtofour)
    if address.teredo is not None:
        return False
    return address in _IPV6_GLOBAL_UNICAST and not any(
        address in network for network in _IPV6_BLOCKED
    )


def parse_url(url: str, *, allow_private: bool) -> tuple[httpx.URL, str]:
    """Check the URL's form (https, or http too when private targets are allowed; a host; no
    credentials) and return it with its host as sent on the wire (IDNA A-label)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
        parsed.host  # noqa: B018  (decoding an invalid international name raises here)
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise UnsafeTarget("The URL is not valid.") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise UnsafeTarget("The URL must use https.")
    if not host:
        raise UnsafeTarget("The URL has no host.")
    if parsed.userinfo:
        raise UnsafeTarget("The URL may not contain a user name or password.")
    return parsed, host


def literal_address(host: str) -> IPAddress | None:
    """The address a host names literally (`[::1]` or `::1`, `10.0.0.1`), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def lookup(host: str, port: int) -> list[IPAddress]:
    """Resolve `host` (ASCII) with the system resolver; an address literal is itself."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(DNS_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TimeoutError):
        return []
    # The fourth item is (address, port[, flow, scope]); a zone ("%eth0") is not part of it.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Check `url` and resolve its host; refuse it unless every address is public (or private
    targets are allowed)."""
    parsed, host = parse_url(url, allow_private=allow_private)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await lookup(host, port)
    if not addresses:
        raise UnsafeTarget(f"The host '{host}' could not be resolved.")
    if not allow_private and not all(is_public(a) for a in addresses):
        # The address itself is not shown: it would map the operator's internal names.
        raise UnsafeTarget(
            f"The host '{host}' resolves to an address that is not public: webhooks are only "
            "sent to public addresses."
        )
    address = addresses[0]
    if literal_address(host) is not None:
        return Target(url=parsed, address=address)
    return Target(
        url=parsed,
        address=address,
        headers={"Host": host if parsed.port is None else f"{host}:{parsed.port}"},
        extensions={"sni_hostname": host} if parsed.scheme == "https" else {},
    )
