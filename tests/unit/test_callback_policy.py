"""The callback policy on its own (egress.CallbackPolicy), with an injected
resolver: no name is looked up and no connection is made. What the running
server does with it: tests/unit/test_callback_safety.py."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from whisper_mcp.config import ConfigError, Settings
from whisper_mcp.server.egress import CallbackPolicy, CallbackRefused, Unresolvable, literal_address, redact_url

pytestmark = pytest.mark.anyio

EVERYTHING = ("0.0.0.0/0", "::/0")


async def refusal(policy: CallbackPolicy, url: str) -> CallbackRefused:
    """The refusal ``policy`` gives ``url`` (the test fails if it gives none)."""
    with pytest.raises(CallbackRefused) as refused:
        await policy.check(url)
    return refused.value


class Names:
    """A resolver from a table, that records what it was asked; a name maps
    to a list of answers in turn (the last one repeats)."""

    def __init__(self, **table: list[str] | list[list[str]]) -> None:
        self.table = {name.replace("_", "."): answers for name, answers in table.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise OSError(f"no such host {host}")
        if answers and isinstance(answers[0], list):
            turn = sum(1 for h in self.asked if h == host) - 1
            return answers[min(turn, len(answers) - 1)]  # type: ignore[return-value]
        return answers  # type: ignore[return-value]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
        "http://169.254.1.1:8080/",
        "http://[fe80::1]/",
        "http://0.0.0.0:8765/",
        "http://0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
    ],
)
async def test_metadata_link_local_multicast_and_unspecified_are_always_refused(url: str) -> None:
    policy = CallbackPolicy(EVERYTHING, allow_loopback=True, resolver=Names())
    with pytest.raises(CallbackRefused, match="never go there"):
        await policy.check(url)


async def test_a_name_for_the_metadata_address_is_refused_even_when_allowed_by_name() -> None:
    names = Names(metadata_internal=["169.254.169.254"])
    policy = CallbackPolicy(("metadata.internal",), resolver=names)
    refused = await refusal(policy, "http://metadata.internal/computeMetadata/v1/")
    assert "metadata.internal resolves to 169.254.169.254, a link-local, cloud-metadata" in refused.detail


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "127.0.0.1.", "[::1]", "[::ffff:127.0.0.1]"]
)
async def test_every_spelling_of_loopback_is_loopback(host: str) -> None:
    url = f"http://{host}:9000/hook"
    strict = CallbackPolicy(resolver=Names())
    with pytest.raises(CallbackRefused, match="loopback address.*--callback-allow"):
        await strict.check(url)
    target = await CallbackPolicy(allow_loopback=True, resolver=Names()).check(url)
    assert literal_address(target.address) in (literal_address("127.0.0.1"), literal_address("::1"),
                                               literal_address("::ffff:127.0.0.1"))  # fmt: skip
    assert target.url.port == 9000 and target.url.path == "/hook"
    allowed = await CallbackPolicy(("127.0.0.0/8", "::1/128", "::ffff:127.0.0.0/104"), resolver=Names()).check(url)
    assert allowed.address == target.address


async def test_octal_loopback_is_refused_as_a_url() -> None:
    """httpx will not parse it, so it is never called, whatever the policy."""
    with pytest.raises(CallbackRefused, match="not a valid URL"):
        await CallbackPolicy(EVERYTHING, allow_loopback=True, resolver=Names()).check("http://0177.0.0.1:9000/")


def test_numeric_forms_normalise() -> None:
    for spelling in ("127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1"):
        assert str(literal_address(spelling)) == "127.0.0.1", spelling
    assert str(literal_address("[::1]")) == "::1"
    for name in ("example.com", "face.bad", "1e100.net", "", "localhost"):
        assert literal_address(name) is None, name


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1", "fc00::1", "fd12:3456::1", "198.18.0.1"]
)
async def test_private_ranges_need_an_allowance(address: str) -> None:
    names = Names(hooks_internal=[address])
    refused = await refusal(CallbackPolicy(allow_loopback=True, resolver=names), "http://hooks.internal/x")
    assert re.search("private or internal address.*--callback-allow", refused.detail)
    by_name = await CallbackPolicy(("hooks.internal",), resolver=names).check("http://hooks.internal/x")
    assert by_name.address == address
    by_cidr = await CallbackPolicy(EVERYTHING, resolver=names).check("http://hooks.internal/x")
    assert by_cidr.address == address
    with pytest.raises(CallbackRefused):  # an allowed name does not allow other names at that address
        await CallbackPolicy(("other.internal",), resolver=names).check("http://hooks.internal/x")


async def test_a_public_name_connects_to_its_vetted_address_under_its_own_name() -> None:
    names = Names(hooks_example_com=["93.184.216.34", "2606:2800:220:1::1"])
    target = await CallbackPolicy(resolver=names).check("https://user:pw@Hooks.Example.com:8443/cb?token=t")
    assert target.address == "93.184.216.34"
    assert str(target.url) == "https://user:pw@93.184.216.34:8443/cb?token=t"
    assert target.host_header == "hooks.example.com:8443" and target.server_name == "hooks.example.com"
    plain = await CallbackPolicy(resolver=names).check("http://hooks.example.com/cb")
    assert plain.host_header == "hooks.example.com" and plain.server_name is None


async def test_one_refused_address_among_several_refuses_the_name() -> None:
    names = Names(mixed_example_com=["93.184.216.34", "10.0.0.1"])
    refused = await refusal(CallbackPolicy(resolver=names), "http://mixed.example.com/")
    assert "resolves to 10.0.0.1, a private or internal" in refused.detail


async def test_a_name_that_rebinds_to_a_refused_address_is_caught_at_the_next_check() -> None:
    """Accepted at submission; before delivery the name points at the metadata service."""
    names = Names(rebind_example_com=[["93.184.216.34"], ["169.254.169.254"]])
    policy = CallbackPolicy(resolver=names)
    assert (await policy.check("http://rebind.example.com/cb")).address == "93.184.216.34"
    assert "never go there" in (await refusal(policy, "http://rebind.example.com/cb")).detail
    assert names.asked == ["rebind.example.com", "rebind.example.com"]  # resolved each time, never cached


async def test_a_name_that_does_not_resolve() -> None:
    refused = await refusal(CallbackPolicy(resolver=Names()), "http://nowhere.invalid/")
    assert isinstance(refused, Unresolvable)
    assert refused.detail == "nowhere.invalid does not resolve to an address"


async def test_a_names_refusal_does_not_tell_whether_or_where_it_resolves() -> None:
    """One answer whether the name does not resolve or resolves to an address
    refused for any reason: clients cannot probe internal names. The detail,
    for the server's log, tells them apart."""
    names = Names(
        private_test=["10.1.2.3"], metadata_test=["169.254.169.254"], loop_test=["127.0.0.1"], v6_test=["::a00:1"]
    )
    policy = CallbackPolicy(resolver=names)
    refused = {host: await refusal(policy, f"http://{host}:8080/cb") for host in (*names.table, "absent.test")}
    [answer] = {r.message.replace(repr(host), "HOST") for host, r in refused.items()}
    assert answer == (
        "callback_url refused: its host HOST does not resolve here to an address callbacks may go to "
        "(public addresses, and those the server's operator allows with --callback-allow)."
    )
    assert len({r.detail for r in refused.values()}) == len(refused)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "http://", "http://exa mple.com/"])
async def test_not_a_callback_url(url: str) -> None:
    with pytest.raises(CallbackRefused):
        await CallbackPolicy(resolver=Names()).check(url)


def test_allow_entries_are_checked() -> None:
    CallbackPolicy(("10.0.0.0/8", "fd00::/8", "hooks.internal", "192.168.1.7"))
    for bad in ("10.0.0.0/33", "hooks..internal", "not/a/cidr"):
        with pytest.raises(ConfigError, match="--callback-allow"):
            CallbackPolicy((bad,))
        with pytest.raises(ConfigError, match="--callback-allow"):  # the flag and variable, before start-up
            Settings.from_env({}, callback_allow=f"10.0.0.0/8,{bad}")
    env = {"WHISPER_MCP_CALLBACK_ALLOW": "10.0.0.0/8, hooks.internal,::1"}
    assert Settings.from_env(env).callback_allow == ("10.0.0.0/8", "hooks.internal", "::1")


def test_redact_url() -> None:
    assert redact_url("https://user:pw@hooks.example.com/cb?token=abc&job=1#frag") == (
        "https://***@hooks.example.com/cb?token=***&job=***"
    )
    assert redact_url("http://hooks.example.com:8080/cb") == "http://hooks.example.com:8080/cb"
