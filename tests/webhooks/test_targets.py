"""Which addresses a webhook may reach: public unicast only, IPv4 judged the same inside IPv6."""

from __future__ import annotations

import ipaddress

import pytest

from service.webhooks import targets


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.31.255.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.1.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.251", False),  # multicast
        ("255.255.255.255", False),
        ("192.0.2.10", False),  # documentation
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped
        ("::ffff:93.184.215.14", True),
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::5db8:d70e", True),  # NAT64 of 93.184.215.14
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("::127.0.0.1", False),  # IPv4-compatible
        ("::ffff:0:7f00:1", False),  # IPv4-translated
        ("fec0::1", False),  # old site-local
        ("2001:db8::1", False),  # documentation
        ("2001::1", False),  # Teredo
        ("5f00::1", False),  # SRv6 SIDs
        ("192.0.0.8", False),  # IETF protocol assignments
        ("198.18.0.1", False),  # benchmarking
    ],
)
def test_only_public_unicast_addresses_are_allowed(address: str, public: bool):
    assert targets.is_public(ipaddress.ip_address(address)) is public


async def test_a_name_is_resolved_and_the_connection_pinned_to_its_checked_address():
    target = await targets.resolve("http://localhost:8080/hooks?x=1", allow_private=True)
    assert target.address == ipaddress.ip_address("127.0.0.1") or target.address.is_loopback
    assert target.headers == {"Host": "localhost:8080"}
    assert target.pinned_url.host == str(target.address)
    assert target.pinned_url.path == "/hooks" and target.pinned_url.query == b"x=1"
    with pytest.raises(targets.UnsafeTarget, match="an address that is not public"):
        await targets.resolve("https://localhost/hooks", allow_private=False)


async def test_https_keeps_the_name_for_tls():
    target = await targets.resolve("https://localhost:8443/h", allow_private=True)
    assert target.extensions == {"sni_hostname": "localhost"}
    literal = await targets.resolve("https://127.0.0.1:8443/h", allow_private=True)
    assert literal.extensions == {} and literal.headers == {}


@pytest.mark.parametrize(
    "url", ["https://xn--/", "https://[::1/", "https://exa mple.com/", "https://"]
)
async def test_malformed_urls_are_refused_not_crashed_on(url: str):
    with pytest.raises(targets.UnsafeTarget):
        await targets.resolve(url, allow_private=True)


async def test_international_names_are_resolved_and_sent_as_their_a_label(monkeypatch):
    asked = []

    async def lookup(host: str, port: int) -> list[targets.IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address("93.184.215.14")]

    monkeypatch.setattr(targets, "lookup", lookup)
    target = await targets.resolve("https://faß.de/hooks", allow_private=False)
    # IDNA 2008, as httpx sends it: not "fass.de", which IDNA 2003 (socket, ssl) would ask.
    assert asked == ["xn--fa-hia.de"]
    assert target.headers == {"Host": "xn--fa-hia.de"}
    assert target.extensions == {"sni_hostname": "xn--fa-hia.de"}
