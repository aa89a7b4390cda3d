"""Signed deliveries, as Standard Webhooks (https://www.standardwebhooks.com) define them:

- ``webhook-id``: the message id (a delivery's id; a redelivery keeps the original's, so a
  receiver drops a repeat by it),
- ``webhook-timestamp``: unix seconds of this attempt,
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, one per
  secret in use, space-separated: while a rotated secret is in its grace period the
  previous one signs too.

A secret is ``whsec_<base64 of its key bytes>`` (32 random bytes). A receiver verifies
with the ``standardwebhooks`` package: ``Webhook(secret).verify(body, headers)`` checks the
signature and refuses a timestamp more than five minutes off, so a captured delivery cannot
be replayed later (a retry is signed afresh with the time of its own attempt).
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

__all__ = ["new_secret", "headers", "in_use", "SECRET_GRACE"]

SECRET_BYTES = 32
SECRET_GRACE = timedelta(hours=24)  # after a rotation, the previous secret signs this long


def in_use(current: str, previous: str | None, until: datetime | None) -> list[str]:
    """The secrets that sign now: the current one, and the previous one in its grace."""
    if previous and until is not None and until > datetime.now(UTC):
        return [current, previous]
    return [current]


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def headers(
    secrets_in_use: list[str], message_id: str, body: bytes, *, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers of ``body`` sent now (or ``at``)."""
    at = at or datetime.now(UTC)
    signatures = " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets_in_use)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }
