"""Which callback URLs may be called: public http(s) targets only, unless the configuration allows more.

Refused at submit, from the URL alone: credentials in the URL, loopback / private / link-local /
unique-local / reserved / multicast addresses in any spelling (`0x7f000001`, `2130706433`,
`[::ffff:169.254.169.254]`), an IPv4 address embedded in any IPv6 form (IPv4-mapped, IPv4-compatible,
6to4, Teredo, NAT64 under the well-known prefix, the local-use prefix or one `callbacks.nat64_prefixes`
names) judged as that IPv4 address, and names that only mean something inside a network (`localhost`,
`*.internal`, `*.local`, the cloud metadata services). Refused again at send time, on every address
the name resolves to, and the connection then goes to the address that was checked, so DNS
rebinding cannot slip a private address in between. `callbacks.allow` names hosts or CIDR ranges that
are deliberately internal.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import SplitResult, urlsplit

from core.errors import CallbackRefused

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
INTERNAL_NAMES = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain")


Resolver = Callable[..., list[tuple[Any, ...]]]
# NAT64 (RFC 6052): the well-known prefix; RFC 8215's local-use range is a network's own translator, so an
# address in it is internal whatever it embeds
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


class Policy:
    def __init__(
        self, allow: Iterable[str] = (), *, nat64_prefixes: Iterable[str] = (), resolver: Resolver = socket.getaddrinfo
    ) -> None:
        self.resolver = resolver  # socket.getaddrinfo; tests give names their own answers
        self.nat64 = [ipaddress.IPv6Network(p) for p in nat64_prefixes]
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allow:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    def check_url(self, url: str) -> SplitResult:
        """The URL's parts, or CallbackRefused: what submit checks before anything is stored."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CallbackRefused("callback_url must be an absolute http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise CallbackRefused(
                "callback_url must not carry credentials (user:password@): they would be stored in clear; "
                "authenticate the callback with its webhook-signature header instead"
            )
        try:
            _ = parts.port  # reading it validates it
        except ValueError:
            raise CallbackRefused("callback_url has an invalid port") from None
        host = parts.hostname.lower().rstrip(".")
        if host in self.hosts:
            return parts
        ip = literal_address(host)
        if ip is not None:
            self.check_address(ip, host)
        elif host in INTERNAL_NAMES or host.endswith(INTERNAL_SUFFIXES) or "." not in host:
            raise CallbackRefused(
                f"callback_url names {host!r}, which only resolves inside a network; "
                f"list it under callbacks.allow if that target is deliberate"
            )
        return parts

    def check_address(self, ip: IpAddress, host: str) -> None:
        if any(ip in net for net in self.networks):
            return
        if not is_public(ip, self.nat64):
            raise CallbackRefused(
                f"callback_url {host!r} is (or resolves to) {ip}, a loopback, private, link-local or "
                "reserved address; list it (or its network) under callbacks.allow if that is deliberate"
            )

    def resolve(self, host: str, port: int) -> IpAddress:
        """The address to connect to: every address the name resolves to must pass (an allowed name passes)."""
        host = host.lower().rstrip(".")
        literal = literal_address(host)
        if literal is not None:
            self.check_address(literal, host)
            return literal
        try:
            infos = self.resolver(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise CallbackRefused(f"callback host {host!r} does not resolve: {e}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        if host not in self.hosts:
            for ip in addresses:
                self.check_address(ip, host)
        return addresses[0]


def literal_address(host: str) -> IpAddress | None:
    """An IP address however it is spelled (dotted, hex, octal, a single integer, IPv6), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))  # accepts 0x7f000001, 2130706433, 0177.1
        except OSError:
            return None
    return None


def is_public(ip: IpAddress, nat64: Iterable[ipaddress.IPv6Network] = ()) -> bool:
    """A public unicast address, and for IPv6 every IPv4 address it may carry public too."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL_USE:
            return False
        embedded = embedded_ipv4(ip, nat64)
        if embedded and not all(is_public(v4) for v4 in embedded):
            return False
        if embedded and ip.ipv4_mapped is not None:
            return True  # a mapped address is its IPv4 address, nothing more
    return ip.is_global and not ip.is_multicast


def embedded_ipv4(
    ip: ipaddress.IPv6Address, nat64: Iterable[ipaddress.IPv6Network] = ()
) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address `ip` may stand for: IPv4-mapped, IPv4-compatible (deprecated, ::a.b.c.d), 6to4,
    Teredo (server and client), and NAT64 under the well-known prefix and the configured ones."""
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())) if a is not None]
    if ip.packed[:12] == bytes(12) and int(ip) > 1:
        found.append(ipaddress.IPv4Address(ip.packed[12:]))
    if ip in NAT64_WELL_KNOWN:
        found.append(ipaddress.IPv4Address(ip.packed[12:]))
    for net in nat64:
        if ip in net:
            found.append(_rfc6052(ip, net.prefixlen))
    return found


def _rfc6052(ip: ipaddress.IPv6Address, prefix_len: int) -> ipaddress.IPv4Address:
    """The IPv4 address a NAT64 prefix of this length embeds (RFC 6052 section 2.2: bits 64-71 are skipped)."""
    octets = ip.packed[prefix_len // 8 :]
    if prefix_len < 64:
        octets = octets[: 8 - prefix_len // 8] + octets[9 - prefix_len // 8 :]
    else:
        octets = octets[1:] if prefix_len == 64 else octets
    return ipaddress.IPv4Address(octets[:4])
