"""Where callbacks may go: http(s) URLs whose host is a public address. Loopback,
link-local, private, multicast and reserved targets are refused (a callback must not become
a way to make the service call into its own network) unless their network is listed in
``UNLEARN_CALLBACK_ALLOWED_NETWORKS``.

An IPv6 address that carries an IPv4 address (IPv4-mapped and IPv4-compatible, NAT64,
6to4, Teredo) is judged by the IPv4 address it reaches: ``[64:ff9b::a9fe:a9fe]`` is
169.254.169.254 behind a NAT64 gateway, and is refused like it.

A literal address or a ``localhost`` name is checked when the request is submitted (no DNS
on the ingest path); every address a hostname resolves to is checked again at delivery, by
the same rules, and the connection goes to the checked address (no second lookup a
rebinding DNS server could answer differently).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.settings import get_settings

__all__ = ["RefusedTarget", "Target", "allowed", "check_url", "embedded_ipv4", "resolve"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052, the well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215, local-use prefixes
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")  # RFC 3056
_TEREDO = ipaddress.ip_network("2001::/32")  # RFC 4380
_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291, deprecated IPv4-compatible
_MAPPED = ipaddress.ip_network("::ffff:0:0/96")  # RFC 4291, IPv4-mapped
# RFC 6052, 2.2: where a NAT64 prefix of each length puts the IPv4 address, as (bit offset,
# bit count) pieces (bits 64-71 are always skipped), and where the zero suffix starts.
_NAT64_LAYOUTS = {
    48: (((48, 16), (72, 16)), 88),
    56: (((56, 8), (72, 24)), 96),
    64: (((72, 32),), 104),
    96: (((96, 32),), 128),
}


class RefusedTarget(ValueError):
    """The URL is not a place callbacks may go (its message says why)."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: Address


def _bits(value: int, offset: int, count: int) -> int:
    return (value >> (128 - offset - count)) & ((1 << count) - 1)


def _nat64_local(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address a local-use NAT64 prefix (64:ff9b:1::/48 and longer) could
    embed: its length is the gateway's secret, so each layout whose reserved bits are zero
    is a candidate (the /96 layout always is)."""
    value, found = int(address), []
    for pieces, suffix in _NAT64_LAYOUTS.values():
        if _bits(value, 64, 8) and suffix < 128:
            continue  # bits 64-71 must be zero in the shorter layouts
        if suffix < 128 and _bits(value, suffix, 128 - suffix):
            continue
        embedded = 0
        for offset, count in pieces:
            embedded = (embedded << count) | _bits(value, offset, count)
        found.append(ipaddress.IPv4Address(embedded))
    return found


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 transition address reaches (empty for any other)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    if address.is_loopback or address.is_unspecified:
        return []  # ::1 and ::, not IPv4-compatible addresses (RFC 4291, 2.5.5.1)
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _MAPPED or address in _COMPATIBLE or address in _NAT64:
        return [low32]
    if address in _NAT64_LOCAL:
        return _nat64_local(address)
    if address in _SIX_TO_FOUR:
        return [ipaddress.IPv4Address(_bits(int(address), 16, 32))]
    if address in _TEREDO:  # the client's address, obfuscated (RFC 4380, 4)
        return [ipaddress.IPv4Address(int(low32) ^ 0xFFFFFFFF)]
    return []


def allowed(address: Address) -> bool:
    """Whether callbacks may connect to this address: a public one, or one in
    ``UNLEARN_CALLBACK_ALLOWED_NETWORKS``; an IPv6 transition address by the IPv4
    address(es) it reaches."""
    embedded = embedded_ipv4(address)
    if embedded:
        return all(allowed(inner) for inner in embedded)
    if any(address in network for network in get_settings().callback_networks):
        return True
    return address.is_global and not address.is_multicast


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an acceptable URL; RefusedTarget otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise RefusedTarget(f"not a usable URL: {error}") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedTarget("only http and https callbacks are sent")
    if parts.username is not None or parts.password is not None:
        raise RefusedTarget("credentials do not belong in a callback URL")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise RefusedTarget("the URL has no host")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        literal: Address | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if host == "localhost" or host.endswith(".localhost"):
        literal = ipaddress.ip_address("127.0.0.1")
    if literal is not None and not allowed(literal):
        raise RefusedTarget(
            f"{host} is (or reaches) a loopback, link-local, private or reserved address"
        )
    return parts.scheme, host, port


def resolve(url: str) -> Target:
    """The URL checked, its host resolved and every address it resolves to checked."""
    scheme, host, port = check_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ConnectionError(f"cannot resolve {host}: {error}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    refused = [a for a in addresses if not allowed(a)]
    if refused or not addresses:
        raise RefusedTarget(
            f"{host} resolves to a refused address ({refused[0] if refused else 'none'})"
        )
    return Target(url, scheme, host, port, addresses[0])
