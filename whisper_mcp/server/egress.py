"""Where completion callbacks may go: the server-side request forgery policy.

A callback URL is a client's request that this server open a connection, so
its host is resolved and every address it resolves to is judged (``reach``):

* yes: public addresses, from an allow-list (IPv4 outside IANA's
  special-purpose blocks, IPv6 global unicast 2000::/3 outside them, and the
  IPv6 forms of a public IPv4 address that public translators carry: mapped,
  NAT64 64:ff9b::/96, 6to4, Teredo);
* never: link-local (169.254/16, fe80::/10, where cloud metadata lives), the
  known metadata addresses elsewhere, multicast, unspecified (0.0.0.0, ::)
  and reserved or unassigned ranges;
* only when allowed (``--callback-allow`` hosts or CIDRs, or loopback when
  the server itself listens on loopback): loopback, private and other
  internal ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7,
  fec0::/10, ...), and IPv4-compatible, SIIT and local-use NAT64 forms.

An IPv6 form of a non-public IPv4 address is judged as that address
(``::7f00:1`` is loopback, ``::a9fe:a9fe`` link-local). The check runs at
submission (a 400) and again before every delivery, whose connection then
goes to the address just vetted (keeping the Host header and TLS server
name), so a name that resolves to another address by then (DNS rebinding) is
caught.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
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


class Reach(enum.Enum):
    """Where an address is, as the policy sees it."""

    GLOBAL = "global"  # public: callbacks may go there
    LOOPBACK = "loopback"  # this host: when the server listens on loopback, or allowed
    INTERNAL = "internal"  # private and other non-public ranges: when allowed
    NEVER = "never"  # link-local, metadata, multicast, unspecified, reserved: never


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


def _within(ip: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(ip.version == net.version and ip in net for net in networks)


_V4_NEVER = _nets(
    "0.0.0.0/8",  # unspecified, "this network"
    "169.254.0.0/16",  # link-local, 169.254.169.254 metadata (AWS, GCP, Azure, OCI, ...)
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure wire server
)
_V4_LOOPBACK = _nets("127.0.0.0/8")
# IANA's IPv4 special-purpose blocks that are not globally reachable, whole,
# whatever this Python's ``is_global`` says of parts of them.
_V4_INTERNAL = _nets(
    "10.0.0.0/8",
    "100.64.0.0/10",  # shared (carrier-grade NAT)
    "172.16.0.0/12",
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation
    "192.88.99.0/24",  # former 6to4 relay anycast
    "192.168.0.0/16",
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",  # documentation
)
_V6_NEVER = _nets(
    "::/128",  # unspecified
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
    "fd00:ec2::254/128",  # AWS metadata over IPv6
)
_V6_LOOPBACK = _nets("::1/128")
_V6_INTERNAL = _nets("fc00::/7", "fec0::/10")  # unique local; site-local (deprecated, still routed by some)
# The only IPv6 addresses that may be public: global unicast, less the
# special-purpose blocks in it that are not (IANA's registry).
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V6_GLOBAL_EXCEPT = _nets(
    "2001::/23",  # IETF protocol assignments (Teredo, 2001::/32, is read apart)
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation
)
# IPv6 forms that carry an IPv4 address, and where it sits. A public one is
# reached through a public translator or relay, so these are as public as
# the IPv4 address they carry ...
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
# ... while these are never more than internal: translated (if at all) by
# something on the server's own network.
_LOCAL_EMBEDDING = _nets(
    "::/96",  # IPv4-compatible (deprecated): ::a9fe:a9fe is 169.254.169.254
    "::ffff:0:0:0/96",  # SIIT, IPv4-translated
    "64:ff9b:1::/48",  # local-use NAT64 prefix
)
_SEVERITY = (Reach.GLOBAL, Reach.LOOPBACK, Reach.INTERNAL, Reach.NEVER)


def embedded_v4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 one carries (mapped, NAT64, 6to4, Teredo's
    server and client, IPv4-compatible, SIIT), none for any other address."""
    if not isinstance(ip, ipaddress.IPv6Address) or _within(ip, _V6_NEVER + _V6_LOOPBACK):
        return ()
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if ip in _MAPPED or ip in _NAT64 or _within(ip, _LOCAL_EMBEDDING):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


def _reach_v4(ip: ipaddress.IPv4Address) -> Reach:
    if _within(ip, _V4_NEVER):
        return Reach.NEVER
    if _within(ip, _V4_LOOPBACK):
        return Reach.LOOPBACK
    if not ip.is_global or _within(ip, _V4_INTERNAL):
        return Reach.INTERNAL
    return Reach.GLOBAL


def reach(ip: IPAddress) -> Reach:
    """How public ``ip`` is. Public only on an allow-list: IPv4 that Python
    and IANA's registry both call global, IPv6 global unicast outside the
    special-purpose blocks, and the IPv6 forms of a public IPv4 address that
    a public translator carries. An IPv6 form of a non-public IPv4 address
    is what that address is (embedded loopback is loopback); anything not
    listed (reserved, unassigned) is never."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _reach_v4(ip)
    carried = embedded_v4(ip)
    if carried:
        worst = max((_reach_v4(v4) for v4 in carried), key=_SEVERITY.index)
        if worst is not Reach.GLOBAL:
            return worst
        return Reach.INTERNAL if _within(ip, _LOCAL_EMBEDDING) else Reach.GLOBAL
    if _within(ip, _V6_NEVER):
        return Reach.NEVER
    if _within(ip, _V6_LOOPBACK):
        return Reach.LOOPBACK
    if _within(ip, _V6_INTERNAL):
        return Reach.INTERNAL
    if ip in _V6_GLOBAL_UNICAST:
        public = ip.is_global and not _within(ip, _V6_GLOBAL_EXCEPT)
        return Reach.GLOBAL if public else Reach.INTERNAL
    return Reach.NEVER


class CallbackRefused(InvalidInput):
    """A callback URL this server will not call: ``message`` for the client,
    ``detail`` for the server's log (the same but for host names)."""

    code = "callback_refused"

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


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


def _name_refused(host: str, field: str = "callback_url", what: str = "callbacks") -> str:
    """The one answer for a host name that does not resolve or resolves to an
    address callbacks (or ``what``) may not go to."""
    return (
        f"{field} refused: its host {host!r} does not resolve here to an address {what} may go to "
        "(public addresses, and those the server's operator allows with --callback-allow)."
    )


def _shown(ip: IPAddress) -> str:
    """``ip`` and the IPv4 addresses it carries, for messages."""
    carried = embedded_v4(ip)
    return f"{ip} ({', '.join(map(str, carried))})" if carried else str(ip)


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

    def _refusal(self, ip: IPAddress, host_allowed: bool, what: str = "callbacks") -> str | None:
        """Why callbacks (or ``what``) may not go to ``ip``, or None if they may."""
        where = reach(ip)
        if where is Reach.NEVER:
            return f"a link-local, cloud-metadata, multicast, unspecified or reserved address; {what} never go there"
        carried = embedded_v4(ip)
        if host_allowed or self._allowed(ip) or (carried and all(self._allowed(v4) for v4 in carried)):
            return None
        if where is Reach.LOOPBACK:
            if self._allow_loopback:
                return None
            return (
                f"a loopback address, which {what} may reach only when the server listens on loopback "
                "or its operator allows it with --callback-allow"
            )
        if where is Reach.INTERNAL:
            return "a private or internal address; the server's operator can allow it with --callback-allow"
        return None

    def _allowed(self, ip: IPAddress) -> bool:
        return _within(ip, self._networks)

    async def check(self, url: str, *, field: str = "callback_url", what: str = "callbacks") -> Target:
        """Where a delivery to ``url`` goes now; ``CallbackRefused`` (or
        ``Unresolvable``) saying why it may not. For a host name, the message
        is one and the same whether it does not resolve or resolves to an
        address refused, so that answers do not tell which internal names
        exist; ``detail`` (for the server's log) says which. ``field`` and
        ``what``: the request's field and its connections, as messages name
        them (another use of the same policy: ``audio_url``, audio fetches)."""
        try:
            parsed = httpx.URL(url)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except (httpx.InvalidURL, ValueError):
            raise CallbackRefused(f"{field} {redact_url(url)!r} is not a valid URL.") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise CallbackRefused(f"{field} must be an http:// or https:// URL, got {redact_url(url)!r}.")
        host = parsed.host.lower().rstrip(".")
        literal = literal_address(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            addresses = await self._resolve(host, port, field, what)
        host_allowed = literal is None and host in self._hosts
        for ip in addresses:
            reason = self._refusal(ip, host_allowed, what)
            if reason is None:
                continue
            shown = _shown(ip)
            if literal is not None:
                raise CallbackRefused(f"{field} refused: {shown} is {reason}.")
            raise CallbackRefused(_name_refused(host, field, what), detail=f"{host} resolves to {shown}, {reason}")
        address = str(addresses[0])
        return Target(
            url=parsed.copy_with(host=address),
            host_header=parsed.netloc.decode("ascii").rpartition("@")[2],
            server_name=host if parsed.scheme == "https" and literal is None else None,
            address=address,
        )

    async def _resolve(self, host: str, port: int, field: str, what: str) -> list[IPAddress]:
        try:
            async with asyncio.timeout(self._resolve_seconds):
                found = await self._resolver(host, port)
            addresses = [ip for ip in (literal_address(a) for a in found) if ip is not None]
        except (OSError, TimeoutError, UnicodeError):
            addresses = []
        if not addresses:
            raise Unresolvable(_name_refused(host, field, what), detail=f"{host} does not resolve to an address")
        return addresses


@asynccontextmanager
async def pinned(
    client: httpx.AsyncClient,
    method: str,
    target: Target,
    headers: Mapping[str, str],
    content: bytes | None = None,
) -> AsyncIterator[httpx.Response]:
    """A request to the address ``check`` vetted just now (not to whatever the
    name resolves to by the time it connects), under the URL's own name: its
    Host header and TLS server name. The answer streams; it is read as sent
    (``accept-encoding: identity``), so its size is what arrives. The client
    must not follow redirects (each hop is a new ``check``) nor keep
    connections alive (each goes to its own vetted address and name)."""
    extensions = {"sni_hostname": target.server_name} if target.server_name else None
    headers = {**headers, "host": target.host_header, "accept-encoding": "identity"}
    async with client.stream(method, target.url, content=content, headers=headers, extensions=extensions) as response:
        yield response
