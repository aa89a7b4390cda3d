"""Where callbacks may go: http(s) URLs whose host is a public address. Loopback,
link-local, private, multicast and reserved targets are refused (a callback must not become
a way to make the service call into its own network) unless their network is listed in
``UNLEARN_CALLBACK_ALLOWED_NETWORKS``.

A literal address or a ``localhost`` name is checked when the request is submitted (no DNS
on the ingest path); every address a hostname resolves to is checked again at delivery,
and the connection goes to the checked address (no second lookup a rebinding DNS server
could answer differently).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.settings import get_settings

__all__ = ["RefusedTarget", "Target", "check_url", "resolve"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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


def _allowed(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
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
    if literal is not None and not _allowed(literal):
        raise RefusedTarget(f"{host} is a loopback, link-local, private or reserved address")
    return parts.scheme, host, port


def resolve(url: str) -> Target:
    """The URL checked, its host resolved and every address it resolves to checked."""
    scheme, host, port = check_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ConnectionError(f"cannot resolve {host}: {error}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    refused = [a for a in addresses if not _allowed(a)]
    if refused or not addresses:
        raise RefusedTarget(
            f"{host} resolves to a refused address ({refused[0] if refused else 'none'})"
        )
    return Target(url, scheme, host, port, addresses[0])
