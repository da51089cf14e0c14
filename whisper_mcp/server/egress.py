"""Where completion callbacks may go: the server-side request forgery policy.

A callback URL is a client's request that this server open a connection, so
its host is resolved and every address it resolves to is judged:

* never: link-local (169.254/16, fe80::/10, where cloud metadata lives), the
  known metadata addresses elsewhere, multicast, unspecified (0.0.0.0, ::)
  and reserved ranges;
* only when allowed (``--callback-allow`` hosts or CIDRs, or loopback when
  the server itself listens on loopback): loopback, private and other
  non-global ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, ...);
* otherwise: yes.

The check runs at submission (a 400 that says why) and again before every
delivery, whose connection then goes to the address just vetted (keeping the
Host header and TLS server name), so a name that resolves to another address
by then (DNS rebinding) is caught.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from whisper_mcp.config import ConfigError
from whisper_mcp.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to, as text.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

RESOLVE_SECONDS = 5.0

_NEVER = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # unspecified, "this network"
        "169.254.0.0/16",  # link-local, 169.254.169.254 metadata (AWS, GCP, Azure, OCI, ...)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure wire server
        "::/128",  # unspecified
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
        "fd00:ec2::254/128",  # AWS metadata over IPv6
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class CallbackRefused(InvalidInput):
    """A callback URL this server will not call; the message says why."""

    code = "callback_refused"


class Unresolvable(CallbackRefused):
    """The callback URL's host name does not resolve (now)."""


@dataclass(frozen=True)
class Target:
    """Where one delivery goes: the URL with the vetted address in place of
    the host, and the Host header and TLS server name it keeps."""

    url: httpx.URL
    host_header: str
    server_name: str | None  # for https to a name; None for plain http or an address
    address: str


def redact_url(url: str) -> str:
    """The URL for logs and answers: user info and query values replaced by
    ``***`` (they often carry a receiver's credentials)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        query = urlencode([(k, "***") for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "***"


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is one, in any form a resolver would
    take: dotted, short (127.1), decimal (2130706433), hex (0x7f000001),
    octal (0177.0.0.1), or IPv6 (brackets and zone optional)."""
    text = host.strip().strip("[]").split("%", 1)[0].rstrip(".")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text) and text[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _embedded_v4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), else itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The system resolver, off the event loop (asyncio's getaddrinfo runs in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class CallbackPolicy:
    def __init__(
        self,
        allow: Sequence[str] = (),
        *,
        allow_loopback: bool = False,
        resolver: Resolver | None = None,
        resolve_seconds: float = RESOLVE_SECONDS,
    ) -> None:
        """``allow``: host names and addresses or CIDRs (``ConfigError`` if one is neither)."""
        self._networks: list[IPNetwork] = []
        self._hosts: set[str] = set()
        for entry in (e.strip() for e in allow if e.strip()):
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or not all(part for part in entry.rstrip(".").split(".")):
                raise ConfigError(f"--callback-allow={entry!r}: give a host name, an address or a CIDR")
            self._hosts.add(entry.lower().rstrip("."))
        self._allow_loopback = allow_loopback
        self._resolver = resolver or system_resolver
        self._resolve_seconds = resolve_seconds

    def _refusal(self, ip: IPAddress, host_allowed: bool) -> str | None:
        """Why callbacks may not go to ``ip``, or None if they may."""
        ip = _embedded_v4(ip)
        if any(ip in net for net in _NEVER if net.version == ip.version):
            return "a link-local, cloud-metadata, multicast, unspecified or reserved address; callbacks never go there"
        if host_allowed or any(ip in net for net in self._networks if net.version == ip.version):
            return None
        if ip.is_loopback:
            if self._allow_loopback:
                return None
            return (
                "a loopback address, which callbacks may reach only when the server listens on loopback "
                "or its operator allows it with --callback-allow"
            )
        if not ip.is_global:
            return "a private or internal address; the server's operator can allow it with --callback-allow"
        return None

    async def check(self, url: str) -> Target:
        """Where a delivery to ``url`` goes now; ``CallbackRefused`` (or
        ``Unresolvable``) saying why it may not."""
        try:
            parsed = httpx.URL(url)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except (httpx.InvalidURL, ValueError):
            raise CallbackRefused(f"callback_url {redact_url(url)!r} is not a valid URL.") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise CallbackRefused(f"callback_url must be an http:// or https:// URL, got {redact_url(url)!r}.")
        host = parsed.host.lower().rstrip(".")
        literal = literal_address(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            addresses = await self._resolve(host, port)
        host_allowed = literal is None and host in self._hosts
        for ip in addresses:
            reason = self._refusal(ip, host_allowed)
            if reason is not None:
                what = f"{host} is" if literal is not None else f"{host} resolves to"
                raise CallbackRefused(f"callback_url refused: {what} {reason}.")
        address = str(addresses[0])
        return Target(
            url=parsed.copy_with(host=address),
            host_header=parsed.netloc.decode("ascii").rpartition("@")[2],
            server_name=host if parsed.scheme == "https" and literal is None else None,
            address=address,
        )

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            async with asyncio.timeout(self._resolve_seconds):
                found = await self._resolver(host, port)
            addresses = [ip for ip in (literal_address(a) for a in found) if ip is not None]
        except (OSError, TimeoutError, UnicodeError):
            addresses = []
        if not addresses:
            raise Unresolvable(f"callback_url refused: its host {host!r} does not resolve to an address.")
        return addresses
