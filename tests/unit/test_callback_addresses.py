"""Which addresses callbacks may go to (egress.reach): public only from an
allow-list, and every IPv6 form that carries an IPv4 address judged as the
address it carries. Then the policy over the same forms: what each setting
(strict, loopback allowed, CIDRs allowed) lets through. Literal addresses
only: nothing is resolved and no connection is made. The running server's
400 for these forms: tests/unit/test_callback_safety.py."""

from __future__ import annotations

import ipaddress

import pytest

from whisper_mcp.server.egress import CallbackPolicy, CallbackRefused, Reach, embedded_v4, reach

pytestmark = pytest.mark.anyio


def teredo(server: str, client: str) -> str:
    """The Teredo address of ``client`` behind ``server`` (RFC 4380: the
    client's address is stored inverted)."""
    s, c = int(ipaddress.IPv4Address(server)), int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x2001_0000 << 96) | (s << 64) | (0x8000_63BF << 32) | c))


NEVER = [
    # The forms that carried the metadata address past the earlier policy.
    "::a9fe:a9fe",  # IPv4-compatible
    "::169.254.169.254",  # the same, dotted
    "::ffff:0:a9fe:a9fe",  # SIIT
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    # The forms it caught, still caught.
    "::ffff:169.254.169.254",  # mapped
    "64:ff9b::a9fe:a9fe",  # well-known NAT64
    "2002:a9fe:a9fe::1",  # 6to4
    teredo("65.54.227.120", "169.254.169.254"),  # Teredo client
    teredo("169.254.169.254", "8.8.8.8"),  # Teredo server
    "::ffff:0:e000:1",  # SIIT of multicast
    "::2",  # IPv4-compatible 0.0.0.2
    "fe80::1",
    "ff02::1",
    "::",
    "fd00:ec2::254",
    "4000::1",  # outside global unicast: reserved, unassigned
    "100::1",  # discard-only
    "169.254.169.254",
    "100.100.100.200",
    "224.0.0.1",
    "255.255.255.255",
    "0.0.0.0",
]
LOOPBACK = [
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::127.0.0.1",
    "::ffff:0:7f00:1",  # SIIT
    "::ffff:127.0.0.1",  # mapped
    "64:ff9b::7f00:1",  # NAT64
    "64:ff9b:1::7f00:1",  # local-use NAT64
    "2002:7f00:1::1",  # 6to4
    "::1",
    "127.0.0.1",
    "127.255.0.9",
]
INTERNAL = [
    "::a00:1",  # IPv4-compatible 10.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64 10.0.0.1
    "::ffff:0:a00:1",  # SIIT
    "::ffff:10.0.0.1",  # mapped
    "64:ff9b::c0a8:101",  # NAT64 192.168.1.1
    "2002:ac10:1::1",  # 6to4 172.16.0.1
    teredo("65.54.227.120", "10.0.0.1"),
    teredo("10.0.0.1", "8.8.8.8"),
    "fec0::1",  # site-local: ipaddress calls it global
    "fc00::1",
    "fd12:3456::1",
    "2001:db8::1",  # documentation
    "3fff::1",  # documentation (2024): ipaddress calls it global
    "2001:2::1",  # benchmarking
    "2001:4:112::1",  # in the IETF protocol block: none of it is for callbacks
    # A public IPv4 address in a form only a translator on the server's own
    # network would carry is no more than internal.
    "::808:808",
    "::ffff:0:808:808",
    "64:ff9b:1::808:808",
    "10.1.2.3",
    "100.64.0.1",
    "172.16.0.9",
    "192.168.1.1",
    "192.0.0.9",  # IETF protocol assignments: ipaddress calls this one global
    "192.0.2.1",
    "192.88.99.1",  # former 6to4 relay anycast: ipaddress calls it global
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.7",
]
GLOBAL = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001::1",
    # The public forms of a public IPv4 address: through a NAT64 gateway
    # (64:ff9b::/96 is globally reachable), a 6to4 relay, Teredo, or a
    # dual-stack socket (mapped).
    "64:ff9b::808:808",
    "2002:808:808::1",
    teredo("65.54.227.120", "8.8.8.8"),
    "::ffff:8.8.8.8",
]
CASES = [
    *((a, Reach.NEVER) for a in NEVER),
    *((a, Reach.LOOPBACK) for a in LOOPBACK),
    *((a, Reach.INTERNAL) for a in INTERNAL),
    *((a, Reach.GLOBAL) for a in GLOBAL),
]


@pytest.mark.parametrize(("address", "where"), CASES)
def test_reach(address: str, where: Reach) -> None:
    assert reach(ipaddress.ip_address(address)) is where


def test_the_forms_name_the_address_they_carry() -> None:
    carried = {
        "::a9fe:a9fe": ["169.254.169.254"],
        "::ffff:0:a9fe:a9fe": ["169.254.169.254"],
        "::ffff:169.254.169.254": ["169.254.169.254"],
        "64:ff9b::a9fe:a9fe": ["169.254.169.254"],
        "64:ff9b:1::a9fe:a9fe": ["169.254.169.254"],
        "2002:a9fe:a9fe::1": ["169.254.169.254"],
        teredo("65.54.227.120", "10.0.0.1"): ["65.54.227.120", "10.0.0.1"],
        "::1": [],
        "::": [],
        "2606:4700::1111": [],
        "8.8.8.8": [],
    }
    for address, v4 in carried.items():
        assert [str(a) for a in embedded_v4(ipaddress.ip_address(address))] == v4, address


def url(address: str) -> str:
    return f"http://[{address}]:8080/cb" if ":" in address else f"http://{address}:8080/cb"


async def allowed(policy: CallbackPolicy, address: str) -> bool:
    try:
        await policy.check(url(address))
    except CallbackRefused:
        return False
    return True


@pytest.mark.parametrize(("address", "where"), CASES)
async def test_what_each_setting_lets_through(address: str, where: Reach) -> None:
    """Strict: public only. Loopback allowed (a server on loopback): loopback
    too, in any form. Everything allowed by CIDR: all but never."""
    assert await allowed(CallbackPolicy(), address) == (where is Reach.GLOBAL)
    loopback = CallbackPolicy(allow_loopback=True)
    assert await allowed(loopback, address) == (where in (Reach.GLOBAL, Reach.LOOPBACK))
    everything = CallbackPolicy(("0.0.0.0/0", "::/0"))
    assert await allowed(everything, address) == (where is not Reach.NEVER)


@pytest.mark.parametrize("address", ["::ffff:10.0.0.1", "::a00:1", "64:ff9b:1::a00:1", "::ffff:0:a00:1"])
async def test_an_allowed_ipv4_network_allows_its_addresses_in_any_form(address: str) -> None:
    assert await allowed(CallbackPolicy(("10.0.0.0/8",)), address)
    assert not await allowed(CallbackPolicy(("192.168.0.0/16",)), address)


async def test_an_allowed_network_never_allows_the_metadata_address_in_any_form() -> None:
    policy = CallbackPolicy(("0.0.0.0/0", "::/0", "169.254.0.0/16", "64:ff9b:1::/48"), allow_loopback=True)
    for address in [a for a, where in CASES if where is Reach.NEVER]:
        with pytest.raises(CallbackRefused, match="never go there"):
            await policy.check(url(address))


async def test_a_refusal_names_the_address_a_form_carries() -> None:
    with pytest.raises(CallbackRefused) as refused:
        await CallbackPolicy().check("http://[::a9fe:a9fe]/latest/meta-data/")
    assert refused.value.message == (
        "callback_url refused: ::a9fe:a9fe (169.254.169.254) is a link-local, cloud-metadata, multicast, "
        "unspecified or reserved address; callbacks never go there."
    )
