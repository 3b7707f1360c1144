"""Where a webhook may be sent: public addresses only, checked at creation and again at delivery.

A client names the URL, so a delivery is a request this server makes on the client's behalf
(SSRF). The host is resolved here, every address it resolves to must be public, and the request
then goes to the address that was checked (with the name kept for `Host` and TLS), so a DNS
answer that changes between the check and the connection (rebinding) cannot reach inside.
The operator may allow private targets (`FT_WEBHOOKS_ALLOW_PRIVATE=1`, for a receiver on the
same machine or network).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import httpx

MAX_URL_LENGTH = 2048
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and 8215).
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if any(address in network for network in _NAT64):
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None:
            return is_public(address.sixtofour)
    return address.is_global and not address.is_multicast


def parse_url(url: str, *, allow_private: bool) -> httpx.URL:
    """Check the URL's form: https (http too when private targets are allowed), a host, no
    credentials."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise UnsafeTarget(f"The URL is not valid: {error}.") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise UnsafeTarget("The URL must use https.")
    if not parsed.host:
        raise UnsafeTarget("The URL has no host.")
    if parsed.userinfo:
        raise UnsafeTarget("The URL may not contain a user name or password.")
    return parsed


async def lookup(host: str, port: int) -> list[IPAddress]:
    """Resolve `host` with the system resolver (an address literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    # The fourth item is (address, port[, flow, scope]); a zone ("%eth0") is not part of it.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def resolve(url: str, *, allow_private: bool) -> Target:
    """Check `url` and resolve its host; refuse it unless every address is public (or private
    targets are allowed)."""
    parsed = parse_url(url, allow_private=allow_private)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    addresses = await lookup(parsed.host, port)
    if not addresses:
        raise UnsafeTarget(f"The host '{parsed.host}' could not be resolved.")
    if not allow_private:
        refused = [a for a in addresses if not is_public(a)]
        if refused:
            raise UnsafeTarget(
                f"The host '{parsed.host}' resolves to {refused[0]}, which is not a public "
                "address: webhooks are only sent to public addresses."
            )
    address = addresses[0]
    literal = str(address) == parsed.host.strip("[]")
    headers = {} if literal else {"Host": parsed.netloc.decode("ascii")}
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" and not literal else {}
    return Target(url=parsed, address=address, headers=headers, extensions=extensions)
