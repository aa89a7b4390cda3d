"""Webhook verification: the service signs each delivery as Standard Webhooks specify
(``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64>`` headers, a
``whsec_<base64>`` secret); this checks one with the ``standardwebhooks`` library."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify_webhook"]


def verify_webhook(secret: str, body: bytes | str, headers: Mapping[str, str]) -> Any:
    """The delivery's JSON payload, once its signature, made with ``secret`` over the
    ``body`` exactly as received, checks out and its timestamp is within five minutes
    (replays refused); ``WebhookVerificationError`` otherwise. ``headers`` may be any
    mapping (a framework's request headers): names are matched in any case."""
    return Webhook(secret).verify(body, {name: value for name, value in headers.items()})
