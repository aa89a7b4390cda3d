"""Signed callback bodies: ``X-Unlearn-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]``.

Each ``v1`` is HMAC-SHA256, keyed with the tenant's callback secret, of ``"<t>." + body``;
while a rotated secret is in its grace period a second ``v1`` is made with the previous
one. A receiver recomputes it with its secret, compares in constant time, and refuses a
``t`` older than a few minutes: a captured delivery cannot be replayed later, and a retry
is signed afresh with the time of its own attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

__all__ = ["new_secret", "signature_header", "verify"]

TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets_in_use: list[str], body: bytes, *, at: float | None = None) -> str:
    timestamp = int(time.time() if at is None else at)
    macs = ",".join(f"v1={_mac(secret, timestamp, body)}" for secret in secrets_in_use)
    return f"t={timestamp},{macs}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does: True when ``header`` signs ``body`` with ``secret`` recently."""
    fields = [part.partition("=") for part in header.split(",")]
    stamps = [value for name, _, value in fields if name.strip() == "t"]
    macs = [value for name, _, value in fields if name.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not macs:
        return False
    timestamp = int(stamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, mac) for mac in macs)
