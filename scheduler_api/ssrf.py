"""The SSRF guard: which addresses a delivery may connect to.

By default a delivery never connects to: loopback, "this network" (0.0.0.0/8, ::), private
networks (RFC 1918), shared/CGNAT space (100.64.0.0/10), link-local (169.254.0.0/16, which holds
cloud metadata at 169.254.169.254, and fe80::/10), IETF protocol assignments (192.0.0.0/24),
benchmarking (198.18.0.0/15), multicast, reserved (240.0.0.0/4), broadcast, IPv6 unique-local
(fc00::/7) and site-local (fec0::/10: deprecated by RFC 3879, yet still routed inside some
networks), NAT64 (64:ff9b::/96), and the IPv4-mapped / IPv4-compatible IPv6 forms of any of these.

A host containing `%` is refused whatever the policy (ALLOW_PRIVATE_TARGETS included): a
percent-encoded name (`%31%32%37.0.0.1`, `a%2eb.example`) is read differently by different
parsers and resolvers, and an IPv6 zone id (`[fe80::1%25eth0]`) names a network interface of
the worker's own machine, which no tenant has any business choosing (the link-local addresses
that need one are blocked anyway).

The check runs on the address actually connected to: `GuardedResolver` sits inside the HTTP
client's connector and drops blocked addresses from every DNS answer, so a name that resolves
(or re-resolves, DNS rebinding) to a blocked address cannot be reached. Literal IP hosts skip DNS
and are checked by `check_url` before the request and at replace time. Redirects are never
followed, so there is no second hop to check.

`ALLOW_PRIVATE_TARGETS=true` lifts the guard (development, tests). `TARGET_ALLOWLIST` lets chosen
internal targets through: host names (exact, case-insensitive) or IP networks in CIDR form.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import urlsplit

import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from scheduler_api.errors import BlockedTarget as BlockedTarget  # raised by the guarded resolver
from scheduler_api.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), why)
    for cidr, why in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "broadcast"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b::/96", "NAT64"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("fc00::/7", "unique local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
    )
)

_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


def blocked_reason(ip: IPAddress) -> str | None:
    """Why `ip` is blocked, or None when a delivery may connect to it."""
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address a translator or tunnel may deliver to: blocked
        # when that address is.
        embedded, form = ip.ipv4_mapped, "IPv4-mapped"
        if embedded is None and ip in _IPV4_COMPATIBLE and int(ip) > 1:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # ::a.b.c.d (deprecated)
        if embedded is None and ip in _IPV4_TRANSLATED:
            embedded, form = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-translated (SIIT)"
        if embedded is None and ip.sixtofour is not None:
            embedded, form = ip.sixtofour, "6to4"
        if embedded is None and ip.teredo is not None:
            embedded, form = ip.teredo[1], "Teredo"
        if embedded is not None:
            why = blocked_reason(embedded)
            return f"{form} {why}" if why else None
    for network, why in BLOCKED_NETWORKS:
        if ip.version == network.version and ip in network:
            return why
    return None


def literal_ip(host: str) -> IPAddress | None:
    """`host` as an IP address if it is one, also in the shorthand or numeric IPv4 forms the C
    library reads as an address without any DNS (127.1, 2130706433, 0x7f.1, 0177.0.0.1), and
    with the trailing dot of an absolute name (127.0.0.1.), which url parsers drop."""
    bare = host.strip("[]").split("%")[0]
    if bare.endswith(".") and not bare.endswith(".."):
        bare = bare[:-1]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if bare and all(c in "0123456789abcdefxABCDEFX." for c in bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


class TargetPolicy:
    """What the guard lets through: everything (`allow_private`), or public addresses plus the allowlist."""

    def __init__(self, *, allow_private: bool = False, allowlist: Iterable[str] = ()) -> None:
        # Every delivery checks its url's host: remembered per host (the answer depends on nothing else).
        self.check_host = lru_cache(maxsize=65_536)(self._check_host)  # type: ignore[method-assign]
        self.allow_private = allow_private
        self.hosts: set[str] = set()
        self.networks: list[IPNetwork] = []
        for entry in (e.strip() for e in allowlist):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetPolicy:
        return cls(
            allow_private=settings.allow_private_targets,
            allowlist=(settings.target_allowlist or "").split(","),
        )

    def host_allowlisted(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def ip_reason(self, ip: IPAddress) -> str | None:
        """Why connecting to `ip` is refused, or None."""
        if self.allow_private or any(ip.version == n.version and ip in n for n in self.networks):
            return None
        return blocked_reason(ip)

    def check_url(self, url: str) -> str | None:
        """Why a request to `url` is refused before any DNS (literal blocked IP), or None. The
        host is read as the worker will read it (a non-ASCII one through httpx's IDNA step, which
        turns 127。0。0。1 into 127.0.0.1)."""
        host = urlsplit(url).hostname or ""
        if not host.isascii():
            try:
                host = httpx.URL(url).host
            except (httpx.InvalidURL, ValueError):
                pass  # the API refuses such an url anyway (scheduler_api.triggers.url_problem)
        return self.check_host(host)

    def check_host(self, host: str) -> str | None:
        """Why a request to `host` (as in a url, without brackets) is refused before any DNS, or None."""
        return self._check_host(host)

    def _check_host(self, host: str) -> str | None:
        if "%" in host:  # checked before anything else: no policy lets these through (module docstring)
            return "a host containing '%' (a percent-encoded name or an IPv6 zone id)"
        ip = literal_ip(host)
        if self.host_allowlisted(host):
            return None
        if ip is None:
            if host and all(c in "0123456789." for c in host) and not self.allow_private:
                # Not an address (1.2.3.4.5, 4294967297), and no DNS name either: the HTTP client
                # might read it as an address without asking the guarded resolver.
                return f"{host} is not a valid IP address"
            return None
        why = self.ip_reason(ip)
        return f"{ip} is a {why} address" if why else None


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops blocked addresses from `inner`'s answers."""

    def __init__(self, policy: TargetPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner  # the system's resolver is made on first use: it needs a running loop

    @property
    def inner(self) -> AbstractResolver:
        if self._inner is None:
            from aiohttp.resolver import ThreadedResolver

            self._inner = ThreadedResolver()
        return self._inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        if self.policy.host_allowlisted(host):
            return answers
        allowed: list[tuple[ResolveResult, str | None]] = []
        refused: list[tuple[ResolveResult, str | None]] = []
        for answer in answers:
            ip = literal_ip(answer["host"])
            why = self.policy.ip_reason(ip) if ip is not None else "unparseable"
            (refused if why else allowed).append((answer, why))
        if not allowed:
            reasons = ", ".join(f"{a['host']} ({why})" for a, why in refused)
            raise BlockedTarget(f"{host} resolves only to blocked addresses: {reasons}")
        return [a for a, _ in allowed]

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def blocked_in_chain(exc: BaseException) -> BlockedTarget | None:
    """The `BlockedTarget` somewhere in `exc`'s cause/context chain (the HTTP client wraps it)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BlockedTarget):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "os_error", None)]
    return None
