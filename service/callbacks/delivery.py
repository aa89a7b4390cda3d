"""One delivery attempt: resolve and check the target, POST the signed body to the checked
address (the hostname still names the TLS certificate and the Host header), record what
happened and count its outcome. Redirects are not followed: they could point anywhere."""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlsplit, urlunsplit

import httpx

from service import metrics
from service.callbacks import service, signing
from service.callbacks.targets import RefusedTarget, Target, resolve
from service.settings import get_settings

__all__ = ["deliver"]

log = logging.getLogger(__name__)


def deliver(delivery_id: str) -> str | None:
    """Attempt a due delivery; returns the attempt's outcome (delivered, retrying, gave_up,
    refused), or None when it was not due."""
    claimed = service.claim(delivery_id)
    if claimed is None:
        return None
    delivery, secrets_in_use = claimed
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    started = time.monotonic()
    response_status, error, final = None, None, False
    try:
        target = resolve(delivery.url)
        signed = signing.headers(secrets_in_use, service.message_id(delivery), body)
        response_status = _post(target, body, signed, delivery.event)
    except RefusedTarget as refused:
        error, final = f"refused target: {refused}", True
    except (httpx.HTTPError, ConnectionError, OSError) as failure:
        error = f"{type(failure).__name__}: {failure}"[:500]
    outcome = service.record(
        delivery,
        response_status=response_status,
        error=error,
        seconds=time.monotonic() - started,
        final=final,
    )
    log.info(
        "callback attempt",
        extra={
            "delivery_id": delivery.id,
            "attempt": delivery.attempts,
            "event": delivery.event,
            "response_status": response_status,
            "outcome": outcome,
        },
    )
    metrics.CALLBACK_ATTEMPTS.labels(outcome).inc()
    return outcome


def _post(target: Target, body: bytes, signed: dict[str, str], event: str) -> int:
    parts = urlsplit(target.url)
    address = f"[{target.address}]" if target.address.version == 6 else str(target.address)
    pinned = urlunsplit(
        (target.scheme, f"{address}:{target.port}", parts.path or "/", parts.query, "")
    )
    default_port = 443 if target.scheme == "https" else 80
    host = target.host if target.port == default_port else f"{target.host}:{target.port}"
    headers = {
        "Host": host,
        "Content-Type": "application/json",
        "User-Agent": "unlearnd-callbacks/1",
        "X-Unlearn-Event": event,
        **signed,
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    timeout = get_settings().callback_timeout_seconds
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request("POST", pinned, content=body, headers=headers)
        request.extensions.update(extensions)
        return client.send(request).status_code
